"""``vllm_load``: for a pool of vLLM servers. Each prompt prefix (``Choice.affinity``) has a
home server, chosen by rendezvous hashing so that it stays put as servers come and go, and goes
there while that server is ready, so that vLLM's prefix cache hits. While its home is down or
unknown (never scraped successfully, e.g. a pod not ready yet or just added by a reload), the
next server up in the prefix's rendezvous order is its home (as if the server were gone: its
prompts move together to one server, not scattered by momentary load). A home that is busy
(``MAX_WAITING`` requests queued or ``MAX_KV_CACHE`` of its KV cache used) is skipped for the
server with the fewest waiting requests and the most free KV cache. Busy servers come after
the ready ones, and down or unknown ones last, in their rendezvous order. The state is the
gateway's scrape of each server's ``/metrics`` (``metrics_interval_s``); with no scrape at all
(metrics off) every server is unknown, and the order is the rendezvous order, home first."""

from __future__ import annotations

import hashlib

from app.metrics.backends import BackendState
from app.providers.base import Target
from app.routing.strategies.base import Choice

MAX_WAITING = 8.0
MAX_KV_CACHE = 0.95
READY, BUSY, UNAVAILABLE = 0, 1, 2


def order(choice: Choice) -> list[Target]:
    def load(target: Target) -> tuple[int, float, float]:
        s: BackendState | None = choice.backends.get(target.provider)
        if s is None or s.scraped_at is None or not s.up:
            return UNAVAILABLE, 0.0, 0.0  # last, in rendezvous order (a stable sort)
        busy = s.waiting >= MAX_WAITING or s.kv_cache_usage >= MAX_KV_CACHE
        return BUSY if busy else READY, s.waiting, s.kv_cache_usage

    ranked = sorted(choice.targets, key=lambda t: -_rendezvous(choice.affinity, t))
    home = next((t for t in ranked if load(t)[0] != UNAVAILABLE), ranked[0])
    if load(home)[0] == READY:
        return [home, *sorted([t for t in ranked if t is not home], key=load)]
    return sorted(ranked, key=load)


def _rendezvous(affinity: int, target: Target) -> int:
    digest = hashlib.blake2b(f"{affinity}:{target.provider}:{target.model}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big")
