"""Admit and account: a caller's rate limits and budgets, charged before a call runs and settled
when it ends (``app.limits`` enforces them; Redis makes them hold across processes).

Admit (``Slot.ADMIT``) charges one request and an estimate of its tokens to every bucket of the
caller (its key's, its team's): the prompt's estimated tokens plus the output it may produce for
each of its choices (``n``, a completion's ``best_of`` if more, times its prompts when it sends a
list of them, as each is answered and billed on its own): the request's
``max_completion_tokens`` or ``max_tokens``, else the model's default, capped by
``rate_limits.output_reservation``. No call is charged more than the caller's smallest TPM
limit (``Caller.largest_call``): a call whose prompt and ``max_tokens`` alone (uncapped, for
every choice) ask for more could never fit, and is refused at once (429 ``rate_limit_exceeded``,
"Request too large" quoting what it asked, with ``x-should-retry: false`` and no
``Retry-After``, as OpenAI refuses it); a default output reservation past the limit is charged
as the limit. A refusal is 429 ``rate_limit_exceeded`` with ``Retry-After`` (``type``
``requests`` or ``tokens``, the limit that refused, as OpenAI names it), or 429
``insufficient_quota`` with ``x-should-retry: false`` for a spent budget (with ``Retry-After``
until its day or month ends; none for a ``total`` budget, which never renews); when the limiter
cannot decide (Redis down) the configured fail mode answers 503 ``limiter_unavailable`` (with
``Retry-After: 1``: the limiter asks Redis again a second after a failure) or admits. Admitted
calls and rate-limit refusals (a call too large included) carry OpenAI's ``x-ratelimit-*``
headers.

Account (``Slot.ACCOUNT``) settles each admitted call when it ends, however it ended: the tokens
it really used replace the estimate, and its cost is added to the buckets' budgets, both as the
call's record has them (the call log's spend, which reconciles raise the counters to, is the
same): a call its client left while an attempt was running, before any usage came back, has its
prompt's estimated tokens and their cost (``app.gateway``); a call that reached no upstream has
none, and is charged nothing. A caller
without limits (the master key, a key with none) skips both: no limiter call at all.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Literal

from app import errors
from app.limits import Decision, Limiter
from app.limits.headers import SHOULD_NOT_RETRY, Header
from app.limits.model import Scope
from app.limits.redis import DOWN_FOR_S
from app.metrics.recorder import Recorder
from app.pipeline import ModelCall, Slot, Stage
from app.schemas import ChatRequest, CompletionRequest, EmbeddingRequest
from app.usage import estimate_prompt_tokens

log = logging.getLogger("switchboard.limits")
_ADMITTED = "admit"
"""``ModelCall.extras`` key: the ``Decision`` of a call this stage charged (the calls
``Account`` settles)."""
_LOG_EVERY_S = 10.0
UNAVAILABLE_RETRY_AFTER_S = math.ceil(DOWN_FOR_S)
"""``Retry-After`` of a 503 ``limiter_unavailable``: the limiter asks Redis again this long
after a failure (the 503 ``overloaded`` carries one too)."""


class Admit(Stage):
    slot = Slot.ADMIT

    def __init__(self, limiter: Limiter, *, output_reservation: int,
                 recorder: Recorder | None = None) -> None:
        self._limiter = limiter
        self._reservation = output_reservation
        self._recorder = recorder
        self._logged_at = -math.inf

    def estimate(self, call: ModelCall) -> int:
        """The tokens to charge before the call runs (see the module docstring)."""
        return self._estimate(call)[0]

    def _estimate(self, call: ModelCall) -> tuple[int, int]:
        """``estimate``, and what the request itself asks for: the prompt, plus ``max_tokens``
        for each of its choices when it is sent, uncapped (not the model's default or the
        reservation): the figure a TPM limit refuses as too large, and quotes."""
        request = call.request
        assert request is not None
        tokens = estimate_prompt_tokens(request)
        if isinstance(request, ChatRequest):
            asked = request.max_completion_tokens or request.max_tokens
            n = request.n or 1
        elif isinstance(request, CompletionRequest):
            asked = request.max_tokens  # 0 included: the prompt scored, nothing generated
            n = max(request.n or 1, request.best_of or 1)  # best_of's candidates are billed
            prompt = request.prompt
            if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
                n *= len(prompt)  # a list of prompts: each gets its own n choices, as billed
        else:  # embeddings produce no tokens
            return tokens, tokens
        if asked is not None:
            return tokens + min(asked, self._reservation) * n, tokens + asked * n
        default = call.route().targets[0].max_tokens_default or self._reservation
        return tokens + min(default, self._reservation) * n, tokens

    async def on_request(self, call: ModelCall) -> None:
        caller = call.caller
        buckets = caller.buckets
        if not buckets:
            return
        # the route (and an experiment's variant) before any refusal, so that a refusal counts
        # on its variant; routing reuses it (resolved once)
        call.route()
        tokens, asked = self._estimate(call)
        largest = caller.largest_call
        if largest is not None:
            if asked > largest:  # uncapped: the reservation caps the charge, not the ask
                raise await self._too_large(call, asked, largest)
            if tokens > largest:
                tokens = largest  # a default output reservation past the limit: the limit
        decision = self._limiter.admit_now(buckets, tokens)  # a credit's call: no await
        if decision is None:
            decision = await self._limiter.admit(buckets, tokens)
        call.headers += decision.headers()
        if decision.admitted:
            call.tokens = tokens
            call.extras[_ADMITTED] = decision
            if decision.reason == "unavailable":
                self._unavailable("admitted")
            return
        raise self._refusal(call, decision)

    async def _too_large(self, call: ModelCall, asked: int,
                         largest: int) -> errors.GatewayError:
        """The 429 for a call that asks for more tokens than a TPM limit allows in a whole
        minute: waiting cannot help, so ``x-should-retry: false`` and no ``Retry-After``. It
        carries the ``x-ratelimit-*`` headers as other rate-limit refusals do, of the windows
        as they stand (it is charged nothing): one more limiter round trip, on refusals only."""
        buckets = call.caller.buckets
        scope: Scope = next((b.scope for b in buckets if b.tpm == largest), "key")
        if self._recorder is not None:
            self._recorder.limit_rejected(scope)
        standing = await self._limiter.peek(buckets)
        if standing is not None:
            call.headers += standing.headers()
        call.headers.append(SHOULD_NOT_RETRY)
        if isinstance(call.request, EmbeddingRequest):  # no output: its inputs alone
            asks, cure = "the inputs' estimated tokens", "Send fewer or shorter inputs."
        else:
            asks = "the prompt's estimated tokens plus the output it asks for"
            cure = "Lower max_tokens or shorten the prompt."
        return errors.TokensRateLimited(
            f"Request too large for this {scope}'s tokens per minute: limit {largest}, "
            f"requested {asked} ({asks}). {cure}", code="rate_limit_exceeded")

    def _refusal(self, call: ModelCall, decision: Decision) -> errors.GatewayError:
        if decision.reason == "unavailable":
            self._unavailable("refused")
        elif self._recorder is not None:
            scope: Scope = decision.scope or "key"
            if decision.reason == "budget":
                self._recorder.budget_rejected(scope)
            else:
                self._recorder.limit_rejected(scope)
        return refusal(decision, call.headers)

    def _unavailable(self, outcome: Literal["admitted", "refused"]) -> None:
        if self._recorder is not None:
            self._recorder.limiter_unavailable(outcome)
        now = time.monotonic()
        if now - self._logged_at >= _LOG_EVERY_S:  # rate-limited: Redis down is many calls
            self._logged_at = now
            log.warning("rate limiter unavailable (Redis); calls %s per the configured mode",
                        outcome)


def refusal(decision: Decision, headers: list[Header]) -> errors.GatewayError:
    """The error a refused admission ``decision`` answers (see the module docstring); its
    ``Retry-After``, when it has one, is appended to ``headers``."""
    scope: Scope = decision.scope or "key"
    if decision.reason == "unavailable":
        headers.append((b"retry-after", b"%d" % UNAVAILABLE_RETRY_AFTER_S))
        return errors.GatewayError(
            "The gateway cannot check this key's limits right now; retry shortly.",
            status=503, code="limiter_unavailable")
    if decision.reason == "budget":
        if decision.retry_after_s <= 0:  # a total budget: it never renews
            return errors.QuotaExceeded(f"The {scope}'s total budget is spent.",
                                        code="insufficient_quota")
        headers.append((b"retry-after", b"%d" % math.ceil(decision.retry_after_s)))
        return errors.QuotaExceeded(
            f"The {scope}'s budget for this period is spent.", code="insufficient_quota")
    wait = max(1, math.ceil(decision.retry_after_s))
    headers.append((b"retry-after", b"%d" % wait))
    if decision.refused_requests:
        return errors.RateLimited(f"Rate limit reached for this {scope} on requests per minute; "
                                  f"retry in {wait} s.", code="rate_limit_exceeded")
    return errors.TokensRateLimited(f"Rate limit reached for this {scope} on tokens per minute; "
                                    f"retry in {wait} s.", code="rate_limit_exceeded")


class Account(Stage):
    slot = Slot.ACCOUNT

    def __init__(self, limiter: Limiter) -> None:
        self._limiter = limiter

    def on_end(self, call: ModelCall) -> None:
        admitted: Decision | None = call.extras.get(_ADMITTED)
        if admitted is None:
            return
        record = call.record
        used = record.usage.total_tokens if record.usage is not None else 0
        self._limiter.settle(call.caller.buckets, call.tokens, used, record.cost_usd or 0.0,
                             elapsed_s=None if record.latency_ms is None
                             else record.latency_ms / 1000, slot=admitted.slot)
