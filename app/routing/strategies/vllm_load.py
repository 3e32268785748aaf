"""``vllm_load``: for a pool of vLLM servers. Each prompt prefix (``Choice.affinity``) has a
home server, chosen by rendezvous hashing so that it stays put as servers come and go, and goes
there while that server is not saturated, so that vLLM's prefix cache hits. A saturated home
(``MAX_WAITING`` requests queued, ``MAX_KV_CACHE`` of its KV cache used, or down) is skipped for
the server with the fewest waiting requests and the most free KV cache; saturated servers come
last. The state is the gateway's scrape of each server's ``/metrics``
(``metrics_interval_s``); a server never scraped is taken as idle."""

from __future__ import annotations

import hashlib

from app.metrics.backends import BackendState
from app.providers.base import Target
from app.routing.strategies.base import Choice

MAX_WAITING = 8.0
MAX_KV_CACHE = 0.95


def order(choice: Choice) -> list[Target]:
    def state(target: Target) -> BackendState | None:
        return choice.backends.get(target.provider)

    def saturated(target: Target) -> bool:
        s = state(target)
        return s is not None and s.scraped_at is not None and (
            not s.up or s.waiting >= MAX_WAITING or s.kv_cache_usage >= MAX_KV_CACHE)

    def load(target: Target) -> tuple[bool, float, float]:
        s = state(target)
        if s is None or s.scraped_at is None:
            return saturated(target), 0.0, 0.0
        return saturated(target), s.waiting, s.kv_cache_usage

    ranked = sorted(choice.targets, key=lambda t: -_rendezvous(choice.affinity, t))
    home = ranked[0]
    if not saturated(home):
        return [home, *sorted(ranked[1:], key=load)]
    return sorted(ranked, key=load)


def _rendezvous(affinity: int, target: Target) -> int:
    digest = hashlib.blake2b(f"{affinity}:{target.provider}:{target.model}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big")
