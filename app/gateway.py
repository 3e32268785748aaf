"""The gateway service: resolve a public model, try its targets, account usage and cost, and emit
exactly one call record per request.

Fallback happens only before the first byte reaches the client. For streams that means: a target
is committed to as soon as it yields its first chunk, or as soon as the keep-alive interval passes
without one (the client then gets headers and an SSE comment, so the choice is final; the call's
deadline still bounds the wait for that first chunk).

This is the pipeline's "route and call" step (``app.pipeline``) and the owner every
``ModelCall`` reports its end to: ``finish`` runs the stages' ``on_end`` hooks, then hands the
record to the metrics and the call log, exactly once per call. Answer parsing is in
``app.answers``.

(Past 400 lines: the unary and streamed paths share one attempts loop, with its fallback,
retries and circuit breakers, and one accounting step, the single concept this module owns; what
is known of targets across calls and how a call orders them is ``app.routing.router``, and the
per-endpoint entry points are a few lines each.)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast

from app import errors
from app.answers import (
    Generated,
    body_text,
    chunk_base,
    generated_text,
    judge,
    observe_finish,
)
from app.api.incoming import Incoming, client_request_id
from app.calllog import Attempt, CallRecord, CallSink
from app.calllog.assemble import StreamAnswer
from app.calllog.redact import Redactor
from app.config import GatewayConfig, Limits
from app.inbound.anthropic import native_only_refused, structured_output
from app.metrics.backends import BackendState
from app.metrics.recorder import Recorder
from app.pipeline import Finisher, ModelCall, ModelRequest, Pipeline, Snapshot
from app.pricing import PriceBook
from app.providers.base import (
    PROMPT_USAGE,
    Capability,
    Chat,
    ChatCall,
    Complete,
    CompletionCall,
    Embed,
    EmbeddingCall,
    Json,
    Messages,
    MessagesCall,
    Provider,
    Result,
    StreamChat,
    StreamComplete,
    StreamMessages,
    Target,
)
from app.routing import Route, RoutingTable
from app.routing.breaker import Breaker
from app.routing.retry import retry_delay
from app.routing.router import Router, against_target, deadline_s, verdict
from app.schemas import ChatRequest, CompletionRequest, EmbeddingRequest
from app.usage import Usage, estimate_prompt_tokens, estimate_tokens

T = TypeVar("T")
R = TypeVar("R", ChatRequest, CompletionRequest, EmbeddingRequest)
log = logging.getLogger("switchboard.gateway")

ANSWER_HEAD = 2000
"""Characters of an answer kept for the drift signals (all of it when JSON was asked for); the
metrics drop it once they have seen it."""
# A stream item: a chunk for the client, or None for "still waiting, send a keep-alive".
StreamItem = Json | None
Opener = Callable[[Provider, Target], AsyncIterator[Json]]
_COMMITTED = "routing.committed"
"""``ModelCall.extras`` key: the stats of the target that answered (in flight until the end)."""
_UNJUDGED = "routing.unjudged"
"""``ModelCall.extras`` key: the target a stream committed to, its breaker (``None`` when
breakers are off) and the breaker's ``changes`` when the attempt was admitted, until the stream
ends and its outcome is the attempt's verdict (``Gateway._judge_stream``): a target that cuts
its streams short, or that a keep-alive committed to and never sent a chunk, fails as an attempt
does."""
REFUSED_BODY = "calllog.refused_body"
"""``ModelCall.extras`` key: a request body its parse refused (``app.api.v1.noted``), captured
into the call record with the others when bodies are (``Gateway._capture_refused``)."""
STREAM_END = "stream.end"
"""``ModelCall.extras`` key: a function a stream's endpoint sets, called when the upstream's
stream has ended well (every chunk framed for the client); a ``GatewayError`` from it fails the
call there, as one from the upstream would (``/v1/messages``: a translated stream that gave no
``finish_reason`` was cut short, ``EventWriter.check_end``)."""
_BILLED = "routing.billed"
"""``ModelCall.extras`` key: what failed attempts were billed upstream before they failed
(``GatewayError.billed``: a split embedding's answered batches), and its cost (None unpriced),
summed over the attempts; accounted when the call ends (``_add_billed``)."""
_FALLBACK = "routing.fallback"
"""``ModelCall.extras`` key: whether the attempt running now has a target after it in the call's
order to fall back to (``Gateway._first_chunk_s``)."""
class Gateway(Finisher):
    """One instance per process, built in the app's lifespan. It opens each model call
    (``open``), runs the pipeline's route-and-call step for it, and finishes it (``finish``)."""

    def __init__(
        self,
        *,
        config: GatewayConfig,
        providers: Mapping[str, Provider],
        prices: PriceBook,
        sink: CallSink,
        pipeline: Pipeline | None = None,
        redactor: Redactor | None = None,
        recorder: Recorder | None = None,
        strict_telemetry: bool = False,
        backends: Mapping[str, BackendState] | None = None,
    ) -> None:
        """``backends``: the scraped state of vLLM servers by provider name (the
        ``vllm_load`` strategy reads it)."""
        self.snapshot = Snapshot.build(config, pipeline or Pipeline(), providers, prices)
        """What calls starting now run on (``ModelCall.snapshot``); replaced by ``swap``."""
        self._drift = config.drift
        """The drift settings read at start-up, which judge every call's ``refusal`` as the
        drift monitor counts refusals: ``drift`` is read once (``app.reload``), so a reload
        that changes it moves neither until a restart."""
        self._retiring: list[Snapshot] = []
        """Replaced snapshots that calls still run on."""
        self._closing: set[asyncio.Task[None]] = set()
        self.router = Router(config, backends=backends or {}, recorder=recorder)
        """What is known of each target (kept across reloads): its stats, its circuit breaker
        (one per place its provider points: ``Router.swap``), and the retry budget."""
        self._shadows: set[asyncio.Task[None]] = set()
        """Shadow copies of calls still running (``_shadow``)."""
        self._sink = sink
        self._redactor = redactor
        """Set when bodies are captured into the call record (redacted by it)."""
        self._recorder = recorder
        self._strict_telemetry = strict_telemetry

    @property
    def providers(self) -> Mapping[str, Provider]:
        return self.snapshot.providers

    @property
    def draining(self) -> tuple[Snapshot, ...]:
        """Replaced snapshots that calls (shadow copies included) still run on (their
        providers stay open until then)."""
        return tuple(self._retiring)

    def swap(self, snapshot: Snapshot) -> None:
        """Serve calls that start from now on with ``snapshot`` (a live reload). Calls running
        keep theirs; providers no snapshot still uses are closed once the last call on a
        replaced snapshot has finished, shadow copies included (``_shadow``: a copy runs on its
        original's snapshot)."""
        self._retiring.append(self.snapshot)
        self.snapshot = snapshot
        self.router.swap(snapshot.config)
        self._close_idle()

    def _close_idle(self) -> None:
        """Drop the replaced snapshots no call runs on, and close the providers only they
        had."""
        idle = [s for s in self._retiring if s.in_flight.calls == 0]
        if not idle:
            return
        self._retiring = [s for s in self._retiring if s.in_flight.calls > 0]
        kept = {id(p) for s in (self.snapshot, *self._retiring) for p in s.providers.values()}
        closing = {id(p): p for s in idle for p in s.providers.values() if id(p) not in kept}
        for provider in closing.values():
            task = asyncio.get_running_loop().create_task(self._close(provider))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close(provider: Provider) -> None:
        try:
            await provider.aclose()
        except Exception:  # a provider that fails to close must not break the reload
            log.exception("closing a provider the config no longer has failed")

    @property
    def table(self) -> RoutingTable:
        return self.snapshot.table

    @property
    def limits(self) -> Limits:
        return self.snapshot.limits

    def open(self, incoming: Incoming) -> ModelCall:
        """A new model call: a call id of its own (never the client's), the client's
        ``x-request-id`` kept beside it as ``request_id``, on the current snapshot."""
        return self._open_on(self.snapshot, incoming)

    def _open_on(self, snapshot: Snapshot, incoming: Incoming) -> ModelCall:
        request_id = client_request_id(incoming.headers)
        record = CallRecord(id=os.urandom(16).hex(),  # uuid4().hex measured ~8 us, this ~0.6 us
                            request_id=request_id,
                            endpoint=incoming.path, caller="unauthenticated",
                            config_version=snapshot.version)
        snapshot.in_flight.calls += 1  # back down in finish(), which every call reaches once
        return ModelCall(incoming=incoming, record=record, snapshot=snapshot, owner=self,
                         request_id=request_id)

    # ---- route and call -------------------------------------------------------------------

    async def chat(self, call: ModelCall) -> Result:
        request, body = _request(call, ChatRequest)
        route = self._begin(call, request, body, "chat")
        self._check_generation(call, route, n=request.n, max_tokens=request.max_tokens,
                               max_completion_tokens=request.max_completion_tokens)
        call.record.tags = request.metadata
        call.record.wants_json = request.wants_json() or structured_output(call.native)
        upstream = ChatCall(request=request, body=body)
        run = _chat(upstream)
        if call.native is not None:
            route = _native_route(call, route, "messages")
            run = _native_chat(MessagesCall.from_client(call.native, call.incoming.headers), run)
        return await self._unary(
            call, route, run,
            estimate=lambda answer: Usage(prompt_tokens=estimate_prompt_tokens(request),
                                          completion_tokens=estimate_tokens(generated_text(answer)),
                                          estimated=True),
        )

    async def complete(self, call: ModelCall) -> Result:
        request, body = _request(call, CompletionRequest)
        route = self._begin(call, request, body, "complete")
        self._check_generation(call, route, n=request.n, max_tokens=request.max_tokens,
                               best_of=request.best_of)
        upstream = CompletionCall(request=request, body=body)
        prompt = estimate_prompt_tokens(request)
        return await self._unary(
            call, route, lambda p, t: cast(Complete, p).complete(upstream, target=t),
            estimate=lambda answer: Usage(prompt_tokens=prompt,
                                          completion_tokens=estimate_tokens(body_text(answer)),
                                          estimated=True),
        )

    async def embed(self, call: ModelCall) -> Result:
        request, body = _request(call, EmbeddingRequest)
        route = self._begin(call, request, body, "embed")
        texts = request.texts()
        limit = call.snapshot.limits.max_embedding_inputs
        if len(texts) > limit:
            raise errors.InvalidRequest(f"'input' has {len(texts)} items; the limit is {limit}",
                                        param="input")
        upstream = EmbeddingCall(request=request, body=body)
        return await self._unary(
            call, route, lambda p, t: cast(Embed, p).embed(upstream, target=t),
            estimate=lambda answer: Usage(prompt_tokens=sum(estimate_tokens(t) for t in texts),
                                          estimated=True),
            capture_response=False,  # vectors: large, and no use in a call log
            answer=None,
        )

    def stream_chat(self, call: ModelCall) -> AsyncGenerator[StreamItem, None]:
        request, body = _request(call, ChatRequest)
        route = self._begin(call, request, body, "stream_chat")
        self._check_generation(call, route, n=request.n, max_tokens=request.max_tokens,
                               max_completion_tokens=request.max_completion_tokens)
        call.record.tags = request.metadata
        call.record.wants_json = request.wants_json() or structured_output(call.native)
        upstream = ChatCall(request=request, body=body)
        opener = _stream_chat(upstream)
        if call.native is not None:
            route = _native_route(call, route, "stream_messages")
            opener = _native_stream_chat(
                MessagesCall.from_client(call.native, call.incoming.headers), opener)
        return self._stream(call, route, opener,
                            wants_usage=request.wants_usage_chunk(),
                            prompt_tokens=lambda: estimate_prompt_tokens(request))

    def stream_complete(self, call: ModelCall) -> AsyncGenerator[StreamItem, None]:
        request, body = _request(call, CompletionRequest)
        route = self._begin(call, request, body, "stream_complete")
        self._check_generation(call, route, n=request.n, max_tokens=request.max_tokens,
                               best_of=request.best_of)
        upstream = CompletionCall(request=request, body=body)
        return self._stream(call, route, lambda p, t: cast(StreamComplete, p).stream_complete(
                                upstream, target=t),
                            wants_usage=request.wants_usage_chunk(),
                            prompt_tokens=lambda: estimate_prompt_tokens(request))

    # ---- the parts ------------------------------------------------------------------------

    def _begin(self, call: ModelCall, request: ModelRequest, body: Json,
               capability: Capability) -> Route:
        """Record the request, and the call's route narrowed to the targets that can serve
        ``capability`` (a 400 ``unsupported_endpoint`` if none can): the providers called below
        implement it, which is what makes the casts to its protocol safe."""
        record = call.record
        record.public_model = request.model
        record.end_user = request.user
        record.stream = capability.startswith("stream_")
        if self._redactor is not None:
            record.request_body = self._redactor.redact(body)
        return call.route().serving(capability)

    def _check_generation(self, call: ModelCall, route: Route, *, n: int | None,
                          max_tokens: int | None, max_completion_tokens: int | None = None,
                          best_of: int | None = None) -> None:
        """``n`` and ``best_of`` (a completion's candidates, generated as ``n``'s choices are)
        against the gateway's limit; each token limit the client sent against the route's cap,
        on its own (a provider may read either of them)."""
        limit = call.snapshot.limits.max_n
        for name, count in (("n", n), ("best_of", best_of)):
            if count is not None and count > limit:
                raise errors.InvalidRequest(f"'{name}' is {count}; the limit is {limit}",
                                            param=name, code="integer_above_max_value")
        cap = route.max_tokens_cap
        if not cap:
            return
        for name, value in (("max_tokens", max_tokens),
                            ("max_completion_tokens", max_completion_tokens)):
            if value is not None and value > cap:
                raise errors.InvalidRequest(
                    f"'{name}' is {value}; the limit for model '{route.name}' is {cap}",
                    param=name, code="integer_above_max_value")

    async def _attempts(self, call: ModelCall, route: Route,
                        run: Callable[[Provider, Target], Awaitable[T]], *,
                        deadline: float) -> T:
        """``_try_targets`` (``deadline``: ``_deadline``'s); on a route a policy confined
        (``Route.fail_closed``), a failure of the targets' own (any upstream error but a 4xx the
        request caused) is answered with the route's 503 instead, its attempts kept in the
        record."""
        closed = route.fail_closed
        if closed is None:
            return await self._try_targets(call, route, run, deadline)
        try:
            return await self._try_targets(call, route, run, deadline)
        except errors.UpstreamError as exc:
            if isinstance(exc, errors.UpstreamRejected):
                raise
            raise errors.GatewayError(closed.message, status=503, code=closed.code) from exc

    async def _try_targets(self, call: ModelCall, route: Route,
                           run: Callable[[Provider, Target], Awaitable[T]],
                           deadline: float) -> T:
        """Try the route's targets in the order the strategy gives; the next one only after a
        retryable failure or the target's own refusal (``_refused``), and none past
        ``deadline`` (``time.monotonic()``). The attempt that
        answers stays counted in flight on its target until the call finishes (a stream, until
        it ends)."""
        record = call.record
        router = self.router
        targets = router.order(call, route)
        config = call.snapshot.config  # its breakers: where the call's providers point
        settings = config.breaker
        skip = settings.enabled  # skip open targets, unless all are (then try them anyway)
        if skip:
            closed = [t for t in targets if not router.breaker(t, config).blocked()]
            skip = bool(closed)
            targets = closed or targets
        retries = config.retries
        router.budget.called()
        last = len(targets) - 1
        for i, target in enumerate(targets):
            provider = call.snapshot.providers[target.provider]
            breaker = router.breaker(target, config) if settings.enabled else None
            if breaker is not None and breaker.state != "closed" \
                    and not await router.admit(target, breaker,
                                               within=deadline - time.monotonic()) \
                    and skip and i < last:
                continue  # open, or probed by another call (the last target is tried anyway)
            tries = 0
            call.extras[_FALLBACK] = i < last
            while True:
                left = deadline - time.monotonic()
                if left <= 0:  # not an attempt: nothing was sent to the target
                    raise errors.UpstreamTimeout("the call's deadline passed",
                                                 code="deadline_exceeded")
                since = None if breaker is None else breaker.changes  # (``Breaker.stale``)
                stats = router.states.started(target)
                started = time.perf_counter()
                try:
                    try:
                        async with asyncio.timeout(left):
                            out = await run(provider, target)
                    except TimeoutError:
                        raise errors.UpstreamTimeout(
                            f"the call's deadline passed while {target.provider} worked on it",
                            code="deadline_exceeded") from None
                except errors.GatewayError as exc:
                    router.states.ended(stats)
                    spent = (time.perf_counter() - started) * 1000
                    failed = verdict(exc, call, waited_s=spent / 1000)
                    if failed or against_target(exc):
                        router.states.failed(stats)
                    if breaker is not None:
                        router.judge(target, breaker, failed=failed, since=since)
                    record.upstream_ms += spent
                    record.attempts.append(Attempt(target.provider, target.model,
                                                   exc.status_code, exc.error_type, spent))
                    if exc.billed is not None:
                        _bill(call, target.model, exc.billed)
                    if exc.code is None and exc.param is not None \
                            and type(exc) is errors.InvalidRequest:
                        exc.code = "invalid_value"  # a provider's refusal of a field (README)
                    if exc.code == "deadline_exceeded":
                        raise
                    wait = retry_delay(exc, tries + 1, retries, router.rng) \
                        if tries < retries.attempts else None
                    if (wait is not None and time.monotonic() + wait < deadline
                            and (breaker is None or breaker.state == "closed")
                            and router.budget.allow(retries)):
                        tries += 1
                        slept = time.perf_counter()
                        try:
                            await asyncio.sleep(wait)
                        finally:  # the upstream's time (its Retry-After), not the gateway's
                            record.upstream_ms += (time.perf_counter() - slept) * 1000
                        continue
                    if exc.retryable and i < last:
                        log.info("target %s/%s failed (%s); trying the next", target.provider,
                                 target.model, exc.status_code)
                        break
                    if i < last and _refused(exc):
                        log.info("target %s/%s cannot serve the call (%s); trying the next",
                                 target.provider, target.model, exc.param)
                        break
                    raise
                except asyncio.CancelledError:  # the client left: this attempt ended with it
                    router.states.ended(stats)
                    if breaker is not None:  # no verdict (a probe gives the fleet's claim back)
                        router.judge(target, breaker, failed=None, since=since)
                    spent = (time.perf_counter() - started) * 1000
                    record.upstream_ms += spent
                    record.attempts.append(Attempt(target.provider, target.model, 499, None,
                                                   spent))
                    raise
                except Exception:  # a defect of the gateway's, not the target's: no verdict
                    router.states.ended(stats)
                    if breaker is not None:
                        router.judge(target, breaker, failed=None, since=since)
                    spent = (time.perf_counter() - started) * 1000
                    record.upstream_ms += spent
                    record.attempts.append(Attempt(target.provider, target.model, 500,
                                                   errors.GatewayError.error_type, spent))
                    raise
                spent = (time.perf_counter() - started) * 1000
                if not _waiting(out):  # else its first byte is still to come (``_stream``)
                    router.states.answered(stats, spent)
                if call.streaming:  # judged when the stream ends (``_judge_stream``)
                    call.extras[_UNJUDGED] = (target, breaker, since)
                elif breaker is not None:
                    router.judge(target, breaker, failed=False, since=since)
                call.extras[_COMMITTED] = stats
                record.upstream_ms += spent
                record.attempts.append(Attempt(target.provider, target.model, 200, None, spent))
                record.provider, record.target_model = target.provider, target.model
                return out
        raise AssertionError("a route always has at least one target")

    async def _unary(self, call: ModelCall, route: Route,
                     run: Callable[[Provider, Target], Awaitable[Result]],
                     *, estimate: Callable[[Json], Usage],
                     capture_response: bool = True,
                     answer: Callable[[Json], str] | None = body_text) -> Result:
        record = call.record
        try:
            result = await self._attempts(call, route, run, deadline=_deadline(call))
        except asyncio.CancelledError:
            record.status, record.http_status = "cancelled", 499
            raise
        usage = result.usage
        if usage is None or not usage.plausible():
            usage = estimate(result.body)
            # Not reported, or reported but unreadable or nonsense (``Usage.from_openai``, a
            # provider's ``reported_counts``, ``plausible``): the client sees the counts the
            # call is accounted with, as a stream's last chunk does.
            result.body["usage"] = usage.to_openai()
        self._account(call, usage, result.body)
        if answer is not None:  # drift and ``judge`` read it
            text = answer(result.body)
            record.answer_text = text if record.wants_json else text[:ANSWER_HEAD]
        if self._redactor is not None and capture_response:
            record.response_body = self._redactor.redact(result.body)
        for hook in call.snapshot.pipeline.answer_hooks:
            hook(call, result)
        return result

    @staticmethod
    def _first_chunk_s(call: ModelCall, target: Target) -> float:
        """How long a stream attempt on ``target`` waits for its first chunk before the next
        target is tried; with no other target this call can still try (``_FALLBACK``: the
        targets after it in the call's order, past the context windows and open breakers), no
        limit of its own (a slow first token is then waited for as before: committed at the
        first keep-alive)."""
        if not call.extras.get(_FALLBACK):
            return math.inf
        if target.first_chunk_timeout_s is not None:
            return target.first_chunk_timeout_s
        config = call.snapshot.config
        own = config.providers[target.provider].first_chunk_timeout_s
        return own if own is not None else config.streaming.first_chunk_timeout_s

    async def _open(self, opener: Opener, provider: Provider, target: Target,
                    keepalive_s: float, first_chunk_s: float,
                    ) -> tuple[AsyncIterator[Json], Json | asyncio.Task[Json]]:
        """Start a stream and wait for its first chunk: at most ``first_chunk_s`` when that is
        shorter than the keep-alive interval (then a retryable ``UpstreamTimeout``), else one
        keep-alive interval.

        Returns the stream and either its first chunk or, past the interval, the task still
        waiting for it (the caller then commits to this target).
        """
        stream = opener(provider, target)
        first: asyncio.Task[Json] = asyncio.ensure_future(anext(stream))
        try:
            done, _ = await asyncio.wait({first}, timeout=min(keepalive_s, first_chunk_s))
        except BaseException:
            await _abandon(stream, first)
            raise
        if not done and first_chunk_s < keepalive_s:
            await _abandon(stream, first)
            raise errors.UpstreamTimeout(
                f"no first chunk from {target.provider} within {first_chunk_s:g} s",
                code="first_chunk_timeout")
        if not done:
            return stream, first
        try:
            return stream, first.result()
        except StopAsyncIteration:
            # Nothing has reached the client: a connection that broke before the answer began
            # (retried, then the next target; ``app.routing.retry``).
            await _abandon(stream, None)
            raise errors.UpstreamConnectError(
                f"upstream stream of {target.provider} ended before any data") from None
        except BaseException:
            await _abandon(stream, None)
            raise

    async def _stream(self, call: ModelCall, route: Route, opener: Opener, *,
                      wants_usage: bool, prompt_tokens: Callable[[], int]
                      ) -> AsyncGenerator[StreamItem, None]:
        call.streaming = True  # from here on, this generator finishes the call
        record = call.record
        hooks = call.snapshot.pipeline.chunk_hooks
        ends = call.snapshot.pipeline.stream_end_hooks
        keepalive = call.snapshot.keepalive_s
        stream: AsyncIterator[Json] | None = None
        pending: asyncio.Task[Json] | None = None  # the first chunk, awaited past a keep-alive
        delivered = False  # a chunk reached the client
        generated = Generated()  # what it generated, per choice (for the estimate)
        usage: Usage | None = None
        early: Usage | None = None  # the prompt's counts reported before the end (PROMPT_USAGE)
        held: Json | None = None  # the upstream's usage chunk, sent after what stages release
        body: Json = {}  # the answer's envelope: the first chunk naming the model, else the first
        named = False  # ``body`` names the model (an upstream may open with a chunk that does not)
        committed = 0.0  # when the attempt answering was committed to (``perf_counter``)
        captured = StreamAnswer() if self._redactor is not None else None  # the answer, whole
        try:
            deadline = _deadline(call)
            opened, first = await self._attempts(
                call, route, lambda p, t: self._open(
                    opener, p, t, keepalive, self._first_chunk_s(call, t)),
                deadline=deadline)
            stream, committed = opened, time.perf_counter()
            if isinstance(first, asyncio.Task):
                # Committed at a keep-alive: no fallback from here, but still the deadline.
                pending = first
                while not first.done():
                    yield None
                    left = deadline - time.monotonic()
                    await asyncio.wait({first}, timeout=min(keepalive, max(0.0, left)))
                    # waited out the deadline (a loop that wakes a little early included: it
                    # sent a burst of keep-alives, one per wake, in the deadline's last moment)
                    if not first.done() and left <= keepalive:
                        raise errors.UpstreamTimeout(
                            f"the call's deadline passed while {record.provider} worked on it",
                            code="deadline_exceeded")
                pending = None
                # The wait since the commit was the upstream's, not the gateway's overhead: the
                # attempt (and upstream time) runs to its first chunk, as one not committed at a
                # keep-alive does; from here on, it runs on from now.
                now = time.perf_counter()
                waited = (now - committed) * 1000
                committed = now
                record.upstream_ms += waited
                if record.attempts:
                    record.attempts[-1].duration_ms += waited
                try:
                    first = first.result()
                except StopAsyncIteration:
                    raise errors.BadUpstreamResponse("upstream stream ended before any data") \
                        from None
                stats = call.extras.get(_COMMITTED)
                if stats is not None and record.attempts:  # its first byte, now it came
                    self.router.states.answered(stats, record.attempts[-1].duration_ms)
            overhead = record.elapsed_ms() - record.upstream_ms
            record.ttft_ms = record.elapsed_ms()
            chunk: Json | None = first
            while chunk is not None:
                if PROMPT_USAGE in chunk:
                    early = Usage.from_openai(chunk.pop(PROMPT_USAGE)) or early
                if captured is not None:
                    captured.add(chunk)
                if not named:
                    named = bool(chunk.get("model"))
                    if named or not body:
                        body = chunk
                reported = chunk.get("usage")
                if reported:
                    read = Usage.from_openai(reported)
                    if read is None:
                        # Unreadable or nonsense counts (negative, past MAX_REPORTED_TOKENS):
                        # not relayed; estimated at the end, as if none were reported.
                        chunk = {key: value for key, value in chunk.items() if key != "usage"}
                    else:
                        usage = read
                    if not chunk.get("choices"):
                        if read is not None and wants_usage and (
                                not hooks or (chunk := _through(hooks, call, chunk))):
                            if held is not None:
                                yield held
                            held = chunk
                        chunk = await anext(opened, None)
                        continue
                observe_finish(record, chunk)
                if usage is None or generated.chars < ANSWER_HEAD or record.wants_json:
                    generated.add(chunk)
                if not hooks or (chunk := _through(hooks, call, chunk)):
                    if held is not None:
                        yield held
                        held = None
                    delivered = True
                    yield chunk
                chunk = await anext(opened, None)
            for chunk in _released(ends, call, body):
                delivered = True
                yield chunk
            if held is not None:
                yield held
            ended = call.extras.get(STREAM_END)
            if ended is not None:
                ended()
            text = generated.text()
            record.answer_text = text if record.wants_json else text[:ANSWER_HEAD]
            if usage is None:
                usage = _unreported(early, prompt_tokens, generated)
                if wants_usage:
                    last: Json | None = {**chunk_base(body), "choices": [],
                                         "usage": usage.to_openai()}
                    if hooks and last is not None:
                        last = _through(hooks, call, last)
                    if last is not None:
                        yield last
            self._account(call, usage, body)
            record.upstream_ms = max(0.0, record.elapsed_ms() - overhead)
            self._judge_stream(call, failed=False)
        except errors.GatewayError as exc:
            self.fail(call, exc)
            if stream is not None:  # committed to a target that then failed
                _attempt_failed(record, exc.status_code, exc.error_type, committed=committed)
                self._judge_stream(call, failed=verdict(
                    exc, call, waited_s=record.attempts[-1].duration_ms / 1000)
                    if isinstance(exc, errors.UpstreamError) and record.attempts else None)
            if delivered:  # what stages still hold goes out before the error
                for chunk in _released(ends, call, body):
                    yield chunk
            if held is not None:
                yield held
            raise
        except (asyncio.CancelledError, GeneratorExit):
            record.status, record.http_status = "cancelled", 499
            if delivered:  # the upstream streamed until the client left, as at a normal end
                record.upstream_ms = max(0.0, record.elapsed_ms() - overhead)
            elif stream is not None:
                _attempt_failed(record, 499, None, committed=committed)
            raise
        except Exception:  # a defect: answered 500 by the last-resort handler, recorded here
            self.fail(call, errors.GatewayError("The gateway had an internal error."))
            if stream is not None:
                _attempt_failed(record, 500, errors.GatewayError.error_type,
                                committed=committed)
            raise
        finally:
            self._judge_stream(call, failed=None)  # no verdict yet: the client left, a defect
            try:
                if stream is not None:
                    await _abandon(stream, pending)
            except Exception:
                log.exception("closing the upstream stream failed for %s", record.id)
            finally:
                if record.usage is None and delivered:
                    # Cut short after chunks went out: the upstream bills what it generated.
                    self._account(call, usage or _unreported(
                        early, prompt_tokens, generated), body)
                if captured is not None and body and self._redactor is not None:
                    counted = record.usage  # estimated: the stream's own counts were unusable
                    record.response_body = self._redactor.redact(captured.body(
                        counted.to_openai() if counted is not None and counted.estimated
                        else None))
                self.finish(call)

    def _judge_stream(self, call: ModelCall, *, failed: bool | None) -> None:
        """Report how a stream ended to its target's breaker, once (``_UNJUDGED``): ``failed``
        as ``Router.judge`` takes it (``None``: the stream says nothing of the target)."""
        unjudged: tuple[Target, Breaker | None, int | None] | None = \
            call.extras.pop(_UNJUDGED, None)
        if unjudged is None:
            return
        target, breaker, since = unjudged
        if failed:
            stats = call.extras.get(_COMMITTED)
            if stats is not None:
                self.router.states.failed(stats)
        if breaker is not None:
            self.router.judge(target, breaker, failed=failed, since=since)

    def _account(self, call: ModelCall, usage: Usage, body: Json) -> None:
        """Record ``usage`` and its cost; ``body`` (the answer, or a stream's first chunk naming
        the model) gives the reported model, which prices a target model without a price, and
        the ``system_fingerprint``."""
        record = call.record
        record.usage = usage
        model = body.get("model")
        record.response_model = model if isinstance(model, str) else None
        if record.target_model is not None:
            record.cost_usd = call.snapshot.prices.cost(record.target_model, usage,
                                                        reported=record.response_model)
        fingerprint = body.get("system_fingerprint")
        record.system_fingerprint = fingerprint if isinstance(fingerprint, str) else None
        if record.finish_reason is None:
            observe_finish(record, body)

    def fail(self, call: ModelCall, exc: errors.GatewayError) -> None:
        """Record that ``call`` failed with ``exc`` (scrubbed first: the client's answer is
        built from ``exc`` too); a client that left while sending its body, as cancelled."""
        record = call.record
        if isinstance(exc, errors.ClientDisconnected):
            record.status, record.http_status = "cancelled", 499
            return
        call.snapshot.scrubber.error(exc)
        record.status = "error"
        record.http_status = exc.status_code
        record.error_type = exc.error_type
        record.error_message = exc.message

    def finish(self, call: ModelCall) -> None:
        """End ``call``, once: the stages' ``on_end`` hooks, the record sealed
        (``Pipeline.seal``), then the metrics and the call log, and its shadow copies opened;
        only then does it stop holding its snapshot (``_release``)."""
        if call.finished:
            return
        call.finished = True
        committed = call.extras.pop(_COMMITTED, None)
        if committed is not None:
            self.router.states.ended(committed)
        try:
            self._end(call)
        finally:
            self._release(call.snapshot)

    @staticmethod
    def _capture_refused(call: ModelCall, redactor: Redactor) -> None:
        """The request body of a call refused before it was routed (a 400 of its body, a 403
        of its key, a 404 of its template), as captured bodies are: the parsed body, or the
        body its parse refused (``REFUSED_BODY``). Not where the privacy policy blocked it, or
        where a policy would have screened it had the call got that far (the stored body would
        hold what the policy keeps out of the log)."""
        body = call.body if call.body is not None else call.extras.get(REFUSED_BODY)
        if body is None:
            return
        action = call.record.privacy_action
        if action == "block" or (action is None and call.snapshot.pipeline.screens(call)):
            return
        call.record.request_body = redactor.redact(body)

    def _release(self, snapshot: Snapshot) -> None:
        """One call fewer on ``snapshot``; the last one on a replaced snapshot closes the
        providers only it had (``_close_idle``)."""
        snapshot.in_flight.calls -= 1
        if snapshot is not self.snapshot and snapshot.in_flight.calls == 0:
            self._close_idle()

    def _end(self, call: ModelCall) -> None:
        """``finish``'s work, while ``call`` still holds its snapshot. A call no target
        answered is the last tried target's (its row's ``provider`` and ``target_model``, the
        metrics' ``provider`` label): ``none`` is for a call that reached no provider."""
        record = call.record
        if record.provider is None and record.attempts:
            last = record.attempts[-1]
            record.provider, record.target_model = last.provider, last.model
        if record.usage is None and record.attempts and record.attempts[-1].status == 499:
            _abandoned(call)
        billed = call.extras.pop(_BILLED, None)
        if billed is not None:
            _add_billed(record, *billed)
        record.finished_at = time.time()
        record.latency_ms = record.elapsed_ms()
        if record.status == "ok" and record.answer_text is not None:
            drift = self._drift
            judge(record, record.answer_text, phrases=drift.refusal_phrases,
                  scan_chars=drift.refusal_scan_chars)
        if self._redactor is not None and record.request_body is None:
            self._capture_refused(call, self._redactor)
        for hook in call.snapshot.pipeline.end_hooks:
            try:
                hook(call)
            except Exception:  # one stage's failure must not cost the record (STYLE.md #10)
                if self._strict_telemetry:
                    raise
                log.exception("a pipeline stage's end failed for %s", record.id)
        call.snapshot.pipeline.seal(call)
        if self._recorder is not None:
            self._hand_over(self._recorder.observe, record, "metrics")
        self._hand_over(self._sink.submit, record, "call record sink")
        if record.variant is not None and record.shadow_of is None and record.status == "ok":
            self._shadow(call)

    def _shadow(self, call: ModelCall) -> None:
        """Copy an answered call to its experiment's shadow variants (those that sample it),
        in the background (``app.routing.experiments``). A copy runs on its original's
        snapshot, which it holds as a call does: opened while the original still holds it, so
        a reload meanwhile closes none of the providers the copy uses before the copy ends."""
        record = call.record
        experiment = call.snapshot.table.experiment_of(record.public_model or "")
        serve = self._shadow_server(call.incoming.path)
        if experiment is None or call.request is None or serve is None:
            return
        request, body = call.request, call.body
        if not isinstance(request, EmbeddingRequest) and request.stream:  # a copy never streams
            request = request.model_copy(update={"stream": False, "stream_options": None})
            if body is not None:
                body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        for variant in experiment.shadows:
            if not variant.samples(record.id):
                continue
            copy = self._open_on(call.snapshot, call.incoming)
            copy.record.request_id = None  # the client's id names its own call, not this copy
            copy.record.shadow_of, copy.record.public_model = record.id, record.public_model
            # The copy is sent the messages the original's template version rendered.
            copy.record.prompt_id, copy.record.prompt_version = \
                record.prompt_id, record.prompt_version
            copy.caller, copy.request, copy.body = call.caller, request, body
            copy.pin(variant.route, experiment=experiment.name, variant=variant.name)
            task = asyncio.get_running_loop().create_task(self._serve_shadow(call, copy, serve))
            self._shadows.add(task)
            task.add_done_callback(self._shadows.discard)

    def _shadow_server(self, path: str) -> Callable[[ModelCall], Awaitable[Result]] | None:
        """What serves a shadow copy of a call that came in on ``path`` (a copy is never
        streamed); ``None``: calls to that endpoint get no copies (``/v1/messages``)."""
        return {"/v1/chat/completions": self.chat, "/v1/completions": self.complete,
                "/v1/embeddings": self.embed}.get(path)

    async def _serve_shadow(self, original: ModelCall, copy: ModelCall,
                            serve: Callable[[ModelCall], Awaitable[Result]]) -> None:
        """Serve ``copy`` after the stages' ``on_shadow`` hooks (the privacy policy its
        original ran under applies to it as well)."""
        with contextlib.suppress(errors.GatewayError):  # its row says how it ended
            async with copy:
                copy.record.caller = copy.caller.name
                copy.record.key_id, copy.record.team_id = copy.caller.key_id, \
                    copy.caller.team_id
                await copy.snapshot.pipeline.shadow(original, copy)
                await serve(copy)

    def _hand_over(self, take: Callable[[CallRecord], None], record: CallRecord,
                   what: str) -> None:
        try:
            take(record)
        except Exception:  # telemetry must never break a request (STYLE.md #10)
            if self._strict_telemetry:
                raise
            log.exception("%s failed for %s", what, record.id)

    async def aclose(self) -> None:
        """Close every provider of every snapshot (after the calls, and the shadow copies,
        have drained)."""
        if self._shadows:
            await asyncio.wait(list(self._shadows), timeout=10)
        providers = {id(p): p for s in (self.snapshot, *self._retiring)
                     for p in s.providers.values()}
        for provider in providers.values():
            await provider.aclose()
        if self._closing:
            await asyncio.wait(list(self._closing), timeout=10)


def _refused(exc: errors.GatewayError) -> bool:
    """Whether a failed attempt is its target's own refusal of what the call asks: a 400 its
    provider raised translating the call, before any request (``parallel_tool_calls: false``
    to Gemini, ``temperature`` above 1 to Cohere), which another target may serve; it says
    nothing of the target's health (``unhealthy``). An upstream's own 4xx is an
    ``UpstreamRejected``, answered at once."""
    return type(exc) is errors.InvalidRequest


def _chat(upstream: ChatCall) -> Callable[[Provider, Target], Awaitable[Result]]:
    return lambda p, t: cast(Chat, p).chat(upstream, target=t)


def _stream_chat(upstream: ChatCall) -> Opener:
    return lambda p, t: cast(StreamChat, p).stream_chat(upstream, target=t)


def _unreported(early: Usage | None, prompt_tokens: Callable[[], int],
                generated: Generated) -> Usage:
    """The estimated usage of a stream that ended without its usage (or was cut before it):
    the completion estimated from what it generated (``Generated.tokens``, choice by choice);
    the prompt's counts as the upstream reported them early (``PROMPT_USAGE``), else estimated
    (``prompt_tokens``)."""
    completion = generated.tokens()
    if early is None:
        return Usage(prompt_tokens=prompt_tokens(), completion_tokens=completion, estimated=True)
    # Every prompt-side count as reported (cache reads and writes, 1-hour writes, audio,
    # searches so far); the completion side estimated.
    return dataclasses.replace(early, completion_tokens=completion, reasoning_tokens=0,
                               estimated=True)


def _abandoned(call: ModelCall) -> None:
    """Account a call the client left while an attempt was running (no usage back yet: a slow
    first token, a long answer not streamed) with its prompt's estimated tokens, priced on the
    attempt's model and marked estimated: charged as if the provider had the prompt, as it
    does, and bills, once the request is sent (an attempt still connecting or uploading is not
    told apart: its client is charged too). Recorded as any usage, so the row, the spend ledger,
    the TPM settle and the budget all count the same (a call left for nothing was charged 0,
    and a key could send prompts past its TPM limit and budget by leaving each call early)."""
    request, record = call.request, call.record
    if request is None:
        return
    usage = Usage(prompt_tokens=estimate_prompt_tokens(request), estimated=True)
    record.usage = usage
    record.cost_usd = call.snapshot.prices.cost(record.attempts[-1].model, usage)


def _bill(call: ModelCall, model: str, usage: Usage) -> None:
    """Keep what a failed attempt on ``model`` was billed (``_BILLED``), priced on ``model``."""
    cost = call.snapshot.prices.cost(model, usage)
    before: tuple[Usage, float | None] | None = call.extras.get(_BILLED)
    if before is not None:
        usage = Usage(prompt_tokens=before[0].prompt_tokens + usage.prompt_tokens,
                      estimated=before[0].estimated or usage.estimated)
        cost = before[1] if cost is None else (before[1] or 0.0) + cost
    call.extras[_BILLED] = (usage, cost)


def _add_billed(record: CallRecord, usage: Usage, cost: float | None) -> None:
    """Account what failed attempts were billed upstream (``_BILLED``): a call that failed has
    it as its usage, and a call a later attempt answered has it on top of that answer's (the
    client's ``usage`` is the answer's own). Recorded as any usage, so the row, the spend ledger,
    the TPM settle and the budget all count the same, as for an abandoned call (``_abandoned``):
    a split embedding whose last batch failed was charged 0 though its other batches were paid
    for, and a client could make it fail on purpose."""
    if record.usage is None:
        record.usage, record.cost_usd = usage, cost
        return
    had = record.usage
    record.usage = dataclasses.replace(had, prompt_tokens=had.prompt_tokens + usage.prompt_tokens,
                                       estimated=had.estimated or usage.estimated)
    if cost is not None:
        record.cost_usd = (record.cost_usd or 0.0) + cost


def _native_chat(native: MessagesCall, translated: Callable[[Provider, Target], Awaitable[Result]]
                 ) -> Callable[[Provider, Target], Awaitable[Result]]:
    """Native targets get ``native``; the others, the translated call."""
    def run(p: Provider, t: Target) -> Awaitable[Result]:
        return p.messages(native, target=t) if isinstance(p, Messages) else translated(p, t)
    return run


def _native_stream_chat(native: MessagesCall, translated: Opener) -> Opener:
    def open_(p: Provider, t: Target) -> AsyncIterator[Json]:
        return p.stream_messages(native, target=t) if isinstance(p, StreamMessages) \
            else translated(p, t)
    return open_


def _native_route(call: ModelCall, route: Route, capability: Capability) -> Route:
    """The route of a call that came in in a dialect some providers speak natively: only
    those targets when the call uses what the translation cannot carry (a 400 naming the
    first such part when the model has none), else every target (the native ones take it
    untranslated)."""
    if not call.native_only:
        return route
    try:
        return call.route().serving(capability)
    except errors.InvalidRequest:
        raise native_only_refused(call.native_only, route.name) from None


def _request(call: ModelCall, kind: type[R]) -> tuple[R, Json]:
    """The call's parsed request, as the endpoint's request type."""
    request, body = call.request, call.body
    assert isinstance(request, kind) and body is not None, "parsed before route and call"
    return request, body


def _through(hooks: tuple[Callable[[ModelCall, Json], Json | None], ...], call: ModelCall,
             chunk: Json) -> Json | None:
    """``chunk`` after every stage's ``on_chunk`` (``None`` once one drops it)."""
    for hook in hooks:
        out = hook(call, chunk)
        if out is None:
            return None
        chunk = out
    return chunk


def _released(hooks: tuple[Callable[[ModelCall, Json], Json | None], ...], call: ModelCall,
              body: Json) -> list[Json]:
    """The chunks the stages' ``on_stream_end`` hooks send once the upstream's stream has ended
    (``body``: its first chunk, whose ``id``, ``object``, ``created`` and ``model`` they carry)."""
    if not hooks:
        return []
    base = chunk_base(body)
    return [chunk for hook in hooks if (chunk := hook(call, base)) is not None]


def _deadline(call: ModelCall) -> float:
    """When (``time.monotonic()``) the call's deadline to its first chunk passes."""
    return time.monotonic() + deadline_s(call, call.snapshot.config.retries)


def _attempt_failed(record: CallRecord, status: int, error_type: str | None, *,
                    committed: float) -> None:
    """The committed (last) attempt did not end well after all: record how it ended, and that it
    ran until now, past the moment it was committed to (``committed``, ``perf_counter``)."""
    if record.attempts:
        ran = (time.perf_counter() - committed) * 1000
        attempt = record.attempts[-1]
        attempt.status, attempt.error_type = status, error_type
        attempt.duration_ms += ran
        record.upstream_ms += ran


def _waiting(opened: object) -> bool:
    """Whether an attempt's result is a stream committed to before its first chunk came (at a
    keep-alive: ``Gateway._open`` returns the task still waiting for it)."""
    return type(opened) is tuple and isinstance(opened[1], asyncio.Task)


async def _abandon(stream: AsyncIterator[Any], pending: asyncio.Task[Any] | None) -> None:
    """Stop a stream: cancel a pending read, then close the generator (closing the upstream)."""
    if pending is not None and not pending.done():
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, errors.GatewayError):
            await pending
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
