"""What the gateway knows about its targets across calls, and how one call's attempts are
ordered (``Router``): the strategies' per-target stats (``app.routing.state``), a circuit breaker
per target (``app.routing.breaker``), the retry budget (``app.routing.retry``), and the call's
deadline. Per process, outside the config snapshots, so a live reload keeps it. The gateway's
attempts loop (``Gateway._attempts``) asks it and reports to it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from app import errors
from app.config import BreakerConfig, RetryConfig
from app.metrics.backends import BackendState
from app.metrics.recorder import Recorder
from app.pipeline import ModelCall
from app.providers.base import Json, Target
from app.routing.breaker import STATE_VALUE, Breaker
from app.routing.retry import RetryBudget
from app.routing.shared import SharedBreakers
from app.routing.state import TargetStates
from app.routing.strategies import STRATEGIES, Choice
from app.routing.table import Route
from app.schemas import EmbeddingRequest
from app.usage import estimate_prompt_tokens

log = logging.getLogger("switchboard.routing")

DEADLINE_HEADER = "x-switchboard-deadline-s"
_PROMPT_PARAM = {"/v1/chat/completions": "messages", "/v1/completions": "prompt",
                 "/v1/embeddings": "input"}


def deadline_s(call: ModelCall, retries: RetryConfig) -> float:
    """The call's deadline to its first byte: the config's, or a shorter one the client asked
    for in ``x-switchboard-deadline-s`` (a longer one is ignored)."""
    asked = call.incoming.headers.get(DEADLINE_HEADER)
    if asked is None:
        return retries.deadline_s
    try:
        seconds = float(asked)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise errors.InvalidRequest(
            f"{DEADLINE_HEADER} must be a positive number of seconds", param=DEADLINE_HEADER,
            code="invalid_deadline")
    return min(seconds, retries.deadline_s)


def unhealthy(exc: errors.GatewayError) -> bool | None:
    """What a failed attempt says of its target: unwell (a 5xx, a refused credential among them,
    a timeout, no connection), or nothing (a 429 is capacity, a 4xx the request, and a call's
    deadline passing its caller's choice: a client sending ``x-switchboard-deadline-s:
    0.0001`` opened a healthy target's breaker, for every caller and, shared, every replica;
    the target's own ``timeout_s`` is what says it is too slow)."""
    if exc.code == "deadline_exceeded":
        return None
    return True if exc.status_code >= 500 else None


def against_target(exc: errors.GatewayError) -> bool:
    """Whether a failed attempt counts against its target in the latency strategy's order
    (``RouteStates.failed``): unwell (``unhealthy``) or out of capacity (a 429: a spent quota
    answers every call so). Not a 4xx the request caused, nor a deadline its caller chose: a
    client sending bad requests, or tiny deadlines, put a healthy target last for everyone."""
    if exc.code == "deadline_exceeded":
        return False
    return exc.status_code >= 500 or exc.status_code == 429


def prefix_key(body: Json | None) -> Any:
    """What calls whose prompts start alike share: the leading system (or developer) messages,
    which every conversation of an application repeats; without them, the first message, which
    every turn of one conversation repeats; a completion's prompt."""
    if not body:
        return None
    messages = body.get("messages")
    if not isinstance(messages, list):
        return body.get("prompt")
    lead = 0
    while lead < len(messages) and isinstance(messages[lead], dict) \
            and messages[lead].get("role") in ("system", "developer"):
        lead += 1
    return messages[:lead or 1]


def _affinity(body: Json | None) -> int:
    """A hash of ``prefix_key``: calls sharing it are sent to the same vLLM server, whose
    prefix cache then hits."""
    key = prefix_key(body)
    if key is None:
        return 0
    digest = hashlib.blake2b(orjson.dumps(key, default=str), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class Router:
    """One per gateway process (see the module docstring)."""

    def __init__(self, *, backends: Mapping[str, BackendState],
                 recorder: Recorder | None) -> None:
        """``backends``: the scraped state of vLLM servers by provider name (``vllm_load``)."""
        self.states = TargetStates()
        self.budget = RetryBudget()
        self.rng = random.Random()
        self._breakers: dict[tuple[str, str], Breaker] = {}
        self._backends = backends
        self._recorder = recorder
        self.shared: SharedBreakers | None = None
        """Shares the breakers' state with the other gateway processes (with Redis)."""

    def order(self, call: ModelCall, route: Route) -> Sequence[Target]:
        """The route's targets in the order this call tries them: those whose context window
        the prompt fits, ordered by the route's strategy (``app.routing.strategies``)."""
        targets: Sequence[Target] = route.targets
        if route.strategy == "ordered" and not route.windowed:
            return targets
        request = call.request
        prompt = 0 if request is None else estimate_prompt_tokens(request)
        if route.windowed:
            targets = [t for t in targets
                       if t.context_window is None or prompt <= t.context_window]
            if not targets:
                raise errors.InvalidRequest(
                    f"The prompt (about {prompt} tokens) is longer than the context window of "
                    f"every target of model '{route.name}'.",
                    param=_PROMPT_PARAM.get(call.incoming.path, "messages"),
                    code="context_length_exceeded")
        if route.strategy == "ordered":
            return targets
        limit = getattr(request, "max_completion_tokens", None) or \
            getattr(request, "max_tokens", None) or targets[0].max_tokens_default or 0
        choice = Choice(targets=targets, stats=self.states.by_target,
                        prices=call.snapshot.prices, backends=self._backends,
                        prompt_tokens=prompt,
                        output_tokens=0 if isinstance(request, EmbeddingRequest) else limit,
                        affinity=_affinity(call.body) if route.strategy == "vllm_load" else 0,
                        rng=self.rng)
        return STRATEGIES[route.strategy](choice)

    def breaker(self, target: Target, settings: BreakerConfig) -> Breaker:
        key = (target.provider, target.model)
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = Breaker(settings)
        breaker.config = settings  # the serving config's (a reload may change it)
        return breaker

    async def admit(self, target: Target, breaker: Breaker) -> bool:
        """Whether a call may try a target whose breaker is not closed: after the cooldown,
        the call that takes the half-open probe (with shared breakers, the fleet's one probe);
        ``False`` while it is open or another call probes it. A verdict another process
        publishes while this one asks Redis for the claim stands, whether or not the claim was
        won (``True`` if it closed the breaker)."""
        before = breaker.state
        took = breaker.available()
        self._changed(target.provider, target.model, before, breaker)
        if not took or breaker.state != "half_open":
            return took
        if self.shared is not None and breaker.config.shared:
            hold_s = breaker.cooldown_s or breaker.config.cooldown_s
            changes = breaker.changes
            try:
                taken = await self.shared.claim(target.provider, target.model, hold_s)
            except asyncio.CancelledError:  # no probe; Redis may have made the claim, or not
                self.shared.release(target.provider, target.model)
                if breaker.changes == changes:
                    breaker.released()
                raise
            if breaker.changes != changes:
                # A verdict arrived while the claim was asked for (the prober's, which fails a
                # refused connection within a millisecond): it stands. Reopening for the old
                # cooldown from now let this process probe a dead target early, and its
                # failure set the fleet's cooldown to twice the old one (5, 10, 10, 20 s).
                if taken:
                    self.shared.release(target.provider, target.model)
                verdict: str = breaker.state  # (not the narrowed "half_open" of before the await)
                return verdict == "closed"
            if not taken:
                # Another process probes it: open until its verdict arrives, or for a cooldown.
                breaker.adopt_open(hold_s, breaker.clock())
                self._changed(target.provider, target.model, "half_open", breaker)
                return False
        return True

    def judge(self, target: Target, breaker: Breaker, *, failed: bool | None) -> None:
        """Report an attempt's outcome to its breaker (``None``: it says nothing about the
        target's health); a change of state is logged, exported and shared."""
        before = breaker.state
        if failed is None:
            if before == "half_open" and breaker.probing and self.shared is not None \
                    and breaker.config.shared:
                self.shared.release(target.provider, target.model)
            breaker.released()
        elif failed:
            breaker.failed()
        else:
            breaker.succeeded()
        if self._changed(target.provider, target.model, before, breaker) and \
                self.shared is not None and breaker.config.shared:
            self.shared.publish(target.provider, target.model, breaker)

    def adopt(self, provider: str, model: str, opened: tuple[float, float] | None) -> None:
        """Another process's breaker of the target opened (``opened``: its cooldown and when,
        on this process's monotonic clock) or closed (``None``)."""
        key = (provider, model)
        breaker = self._breakers.get(key)
        if breaker is None:  # its settings are set at its first use (``breaker()``)
            breaker = self._breakers[key] = Breaker(BreakerConfig())
        before = breaker.state
        if opened is None:
            breaker.adopt_closed()
        else:
            breaker.adopt_open(*opened)
        self._changed(provider, model, before, breaker, shared=True)

    def _changed(self, provider: str, model: str, before: str, breaker: Breaker, *,
                 shared: bool = False) -> bool:
        """Log and export a change of ``breaker``'s state from ``before``; whether it changed."""
        if breaker.state == before:
            return False
        log.warning("target %s/%s: circuit %s -> %s%s", provider, model, before, breaker.state,
                    " (from another gateway process)" if shared else "")
        if self._recorder is not None:
            self._recorder.target_state(provider, upstream_model=model,
                                        value=STATE_VALUE[breaker.state])
        return True

    @property
    def breakers(self) -> Mapping[tuple[str, str], Breaker]:
        """The circuit breakers by (provider, model), of the targets tried so far."""
        return self._breakers

