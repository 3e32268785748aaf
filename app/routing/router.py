"""What the gateway knows about its targets across calls, and how one call's attempts are
ordered (``Router``): the strategies' per-target stats (``app.routing.state``), a circuit breaker
per target (``app.routing.breaker``), the retry budget (``app.routing.retry``), and the call's
deadline. Per process, outside the config snapshots, so a live reload keeps it; but a breaker
belongs to a target where its provider points, so a reload that points a provider elsewhere
starts its targets' breakers afresh, and the calls still running on the old location report to
the old ones (``Router.swap``). The gateway's attempts loop (``Gateway._attempts``) asks it and
reports to it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from app import errors
from app.config import GatewayConfig, RetryConfig
from app.metrics.backends import BackendState
from app.metrics.recorder import Recorder
from app.pipeline import ModelCall
from app.providers.base import Json, Target
from app.routing.breaker import STATE_VALUE, Breaker, State
from app.routing.retry import RetryBudget
from app.routing.shared import SharedBreakers, location
from app.routing.state import TargetStates
from app.routing.strategies import STRATEGIES, Choice
from app.routing.table import Route
from app.schemas import EmbeddingRequest
from app.usage import estimate_prompt_tokens

log = logging.getLogger("switchboard.routing")

DEADLINE_HEADER = "x-switchboard-deadline-s"
_PROMPT_PARAM = {"/v1/chat/completions": "messages", "/v1/completions": "prompt",
                 "/v1/embeddings": "input"}

CLAIM_WAIT_S = 1.0
"""The longest a call waits for Redis's answer to its half-open probe claim (``Router.admit``);
Redis answers in well under a millisecond."""

BreakerKey = tuple[str, str, str]
"""What a circuit breaker belongs to: a target's provider and model, and where the provider
points (``app.routing.shared.location``), as the shared breakers name it too."""


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


def verdict(exc: errors.GatewayError, call: ModelCall, *, waited_s: float) -> bool | None:
    """``unhealthy``, but for a call's deadline that passed while an attempt waited
    ``waited_s`` on its target: a failure (the target's timeout) when it is the config's own
    ``retries.deadline_s`` (a client's shorter ``x-switchboard-deadline-s`` never counts) and
    the attempt had at least half of it. With a ``deadline_s`` shorter than a target's
    ``timeout_s``, a hung first target reached the deadline on every call, with no verdict: its
    breaker never opened and no call fell back. A target left only the tail of the deadline
    by earlier attempts and waits is not blamed."""
    if exc.code != "deadline_exceeded":
        return unhealthy(exc)
    retries = call.snapshot.config.retries
    own = deadline_s(call, retries) >= retries.deadline_s
    return True if own and waited_s >= retries.deadline_s / 2 else None


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

    def __init__(self, config: GatewayConfig, *, backends: Mapping[str, BackendState],
                 recorder: Recorder | None) -> None:
        """``config``: the one serving (``swap`` follows reloads); ``backends``: the scraped
        state of vLLM servers by provider name (``vllm_load``)."""
        self.states = TargetStates()
        self.budget = RetryBudget()
        self.rng = random.Random()
        self._breakers: dict[BreakerKey, Breaker] = {}
        self._at: dict[str, str] = {}
        """Where each provider points in the serving config (one a reload removed: where it
        pointed last, so that adding it back there finds its breakers)."""
        self._moved: dict[str, float] = {}
        """When (``time.monotonic()``) a reload last pointed each provider elsewhere: another
        process's opening of one of its targets from before then is not adopted (``adopt``)."""
        self._backends = backends
        self._recorder = recorder
        self.shared: SharedBreakers | None = None
        """Shares the breakers' state with the other gateway processes (with Redis)."""
        self.serving = config
        """The config calls start on now (``swap``)."""
        self.swap(config)

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

    def swap(self, config: GatewayConfig) -> None:
        """Calls starting from now on run on ``config`` (a live reload, ``Gateway.swap``). Every
        breaker takes its ``breaker:`` settings. A provider it points elsewhere (a new
        ``base_url``, ``endpoint``, AWS ``region`` or Vertex ``project`` or ``location``:
        ``location``, the usual fix for a dead upstream) gets fresh breakers for
        its targets, closed, and exported so: the calls still running on the old location keep
        reporting to that location's breakers, whose verdicts (shared ones included) stay with
        it. A provider that did not move keeps its breakers' state. Shared, the openings of
        its new location's targets from before the reload are superseded for the fleet
        (``SharedBreakers.moved``; a provider pointed back where it was starts closed on the
        replicas that start or resubscribe later too)."""
        self.serving = config
        for breaker in self._breakers.values():
            breaker.config = config.breaker
        for provider in config.providers:
            where, before = location(config, provider), self._at.get(provider)
            self._at[provider] = where
            if before is None or before == where:
                continue
            self._moved[provider] = time.monotonic()
            if self.shared is not None and config.breaker.shared:
                self.shared.moved(provider, where)
            for key in [k for k in self._breakers if k[0] == provider and k[2] == where]:
                del self._breakers[key]  # pointed back to where it once was: afresh too
            for (named, model, at), old in self._breakers.items():
                if named == provider and at == before:
                    self._report(provider, model, old.state, "closed",
                                 " (its provider points elsewhere now)")

    def breaker(self, target: Target, config: GatewayConfig) -> Breaker:
        """The breaker of ``target`` on ``config``, the config the asking call runs on: that of
        where its provider points there (made with ``config``'s settings if new)."""
        key = (target.provider, target.model, location(config, target.provider))
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = Breaker(config.breaker, location=key[2])
        return breaker

    async def admit(self, target: Target, breaker: Breaker, *,
                    within: float = math.inf) -> bool:
        """Whether a call may try a target whose breaker is not closed: after the cooldown,
        the call that takes the half-open probe (with shared breakers, the fleet's one probe);
        ``False`` while it is open or another call probes it. A verdict another process
        publishes while this one asks Redis for the claim stands, whether or not the claim was
        won (``True`` if it closed the breaker).

        ``within``: the seconds left of the call's deadline. The fleet's claim is taken for a
        cooldown and renewed until then (``SharedBreakers.hold``; the probe's verdict gives it
        back sooner), so that no other process probes while this probe may still run (held for
        a cooldown, a black-holed target's probe outlasted it, and every process sent its own),
        and a prober that dies leaves it to lapse within a cooldown. Redis's answer is waited
        for at most ``CLAIM_WAIT_S`` and half of ``within``: a call with no time left for it
        takes no probe (the next call may); one that Redis does not answer in time probes, as
        when Redis is down (a hung Redis held every probe call for its 5 s socket timeout,
        past the call's deadline)."""
        if within <= 0:
            return False  # no time left to probe: the next call will
        before = breaker.state
        took = breaker.available()
        key = (target.provider, target.model, breaker.location)
        self._changed(key, before, breaker)
        if not took or breaker.state != "half_open":
            return took
        if self.shared is not None and breaker.config.shared:
            cooldown_s = breaker.cooldown_s or breaker.config.cooldown_s
            wait_s = min(CLAIM_WAIT_S, within / 2)
            changes = breaker.changes
            late = False
            try:
                async with asyncio.timeout(wait_s):
                    taken = await self.shared.claim(key, cooldown_s)
            except TimeoutError:
                late = wait_s < CLAIM_WAIT_S  # the call's deadline, not Redis, ran short
                if not late:
                    log.warning("Redis did not answer a half-open probe's claim within %g s "
                                "(probing anyway)", wait_s)
                taken = not late
            except asyncio.CancelledError:  # no probe; Redis may have made the claim, or not
                self.shared.release(key)
                if breaker.changes == changes:
                    breaker.released()
                raise
            if breaker.changes != changes:
                # A verdict arrived while the claim was asked for (the prober's, which fails a
                # refused connection within a millisecond): it stands. Reopening for the old
                # cooldown from now let this process probe a dead target early, and its
                # failure set the fleet's cooldown to twice the old one (5, 10, 10, 20 s).
                if taken or late:
                    self.shared.release(key)
                verdict: str = breaker.state  # (not the narrowed "half_open" of before the await)
                return verdict == "closed"
            if late:  # Redis may still make the claim: give it back; the next call probes
                self.shared.release(key)
                breaker.released()
                return False
            if not taken:
                # Another process probes it: open for a cooldown (or until its verdict
                # arrives), then ask for the claim again.
                breaker.adopt_open(cooldown_s, breaker.clock())
                self._changed(key, "half_open", breaker)
                return False
            self.shared.hold(key, cooldown_s, within)
        return True

    def judge(self, target: Target, breaker: Breaker, *, failed: bool | None,
              since: int | None = None) -> None:
        """Report an attempt's outcome to its breaker (``None``: it says nothing about the
        target's health), on the location it was made for (where the attempt went, whatever
        the config serving now); a change of state is logged, exported and shared. ``since``:
        the breaker's ``changes`` when the attempt was admitted; the verdict of one admitted
        before the breaker last opened or closed is ignored (``Breaker.stale``: a stream
        accepted before the target failed, ending later, closed an open breaker, fleet-wide)."""
        key = (target.provider, target.model, breaker.location)
        before = breaker.state
        if breaker.stale(since):
            return
        if failed is None:
            if before == "half_open" and breaker.probing and self.shared is not None \
                    and breaker.config.shared:
                self.shared.release(key)
            breaker.released()
        elif failed:
            breaker.failed()
        else:
            breaker.succeeded()
        if self._changed(key, before, breaker) and \
                self.shared is not None and breaker.config.shared:
            self.shared.publish(key, breaker)
            if before == "half_open":  # a failed probe: its claim, held as long as it might run
                self.shared.release(key)

    def adopt(self, key: BreakerKey, opened: tuple[float, float] | None) -> None:
        """Another process's breaker of ``key`` opened (``opened``: its cooldown and when, on
        this process's monotonic clock) or closed (``None``); ignored unless its location is
        where the provider points here (another deployment's provider of the same name, or
        this provider before or after a reload that another process has not made yet), and an
        opening from before a reload here pointed the provider there (a provider pointed back
        where it was starts afresh: an entry left in Redis from before is stale)."""
        provider, _, where = key
        if self._at.get(provider) != where:
            return
        if opened is not None and opened[1] < self._moved.get(provider, -math.inf):
            return
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = Breaker(self.serving.breaker, location=where)
        before = breaker.state
        if opened is None:
            breaker.adopt_closed()
        else:
            breaker.adopt_open(*opened)
        self._changed(key, before, breaker, shared=True)

    def _changed(self, key: BreakerKey, before: str, breaker: Breaker, *,
                 shared: bool = False) -> bool:
        """Log and export a change of ``breaker``'s state from ``before``; whether it changed.
        A breaker of where a provider pointed before a reload is not exported: the target's
        series is its breaker where the provider points now."""
        if breaker.state == before:
            return False
        provider, model, where = key
        if self._at.get(provider) != where:
            log.warning("target %s/%s: circuit %s -> %s, where its provider pointed before a "
                        "reload", provider, model, before, breaker.state)
            return True
        self._report(provider, model, before, breaker.state,
                     " (from another gateway process)" if shared else "")
        return True

    def _report(self, provider: str, model: str, before: str, state: State,
                why: str = "") -> None:
        """Log (if it changed) and export the state of the target's breaker."""
        if state != before:
            log.warning("target %s/%s: circuit %s -> %s%s", provider, model, before, state, why)
        if self._recorder is not None:
            self._recorder.target_state(provider, upstream_model=model,
                                        value=STATE_VALUE[state])

    @property
    def breakers(self) -> Mapping[tuple[str, str], Breaker]:
        """The circuit breakers by (provider, model), of the targets tried so far, where their
        providers point in the serving config (or pointed last, for providers it removed)."""
        return {(provider, model): breaker
                for (provider, model, where), breaker in self._breakers.items()
                if self._at.get(provider) == where}

