"""The gateway service: resolve a public model, try its targets, account usage and cost, and emit
exactly one call record per request.

Fallback happens only before the first byte reaches the client. For streams that means: a target
is committed to as soon as it yields its first chunk, or as soon as the keep-alive interval passes
without one (the client then gets headers and an SSE comment, so the choice is final).

(Just past 400 lines: one call's lifecycle, begin, attempts, stream, account, finish, reads as one
piece until issue 9's request pipeline splits it into stages; answer parsing is in
``app.answers``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

from app import errors
from app.answers import body_text, chunk_base, chunk_text, observe_finish
from app.calllog import Attempt, CallRecord, CallSink
from app.calllog.redact import Redactor
from app.config import GatewayConfig
from app.metrics.recorder import Recorder as Telemetry
from app.pricing import PriceBook
from app.providers.base import (
    ChatCall,
    CompletionCall,
    EmbeddingCall,
    Json,
    Provider,
    Result,
    Target,
)
from app.routing import Route, RoutingTable
from app.scrub import Scrubber, config_secrets
from app.usage import Usage, estimate_tokens

T = TypeVar("T")
log = logging.getLogger("switchboard.gateway")

_PER_MESSAGE_TOKENS = 3
ANSWER_HEAD = 2000
"""Characters of an answer kept for the drift signals (all of it when JSON was asked for); the
metrics drop it once they have seen it."""
# A stream item: a chunk for the client, or None for "still waiting, send a keep-alive".
StreamItem = Json | None
Opener = Callable[[Provider, Target], AsyncIterator[Json]]


def _chat_prompt_tokens(call: ChatCall) -> int:
    return sum(estimate_tokens(m.text()) + _PER_MESSAGE_TOKENS for m in call.request.messages)


class Gateway:
    """One instance per process, built in the app's lifespan."""

    def __init__(
        self,
        *,
        config: GatewayConfig,
        providers: Mapping[str, Provider],
        prices: PriceBook,
        sink: CallSink,
        capture: Redactor | None = None,
        telemetry: Telemetry | None = None,
        strict_telemetry: bool = False,
    ) -> None:
        self.table = RoutingTable(config)
        self.limits = config.limits
        self.keepalive_s = config.streaming.keepalive_s
        self._providers = providers
        self._prices = prices
        self._sink = sink
        self._capture = capture
        """Set when bodies are captured into the call record (redacted)."""
        self._telemetry = telemetry
        self._strict_telemetry = strict_telemetry
        self._scrubber = Scrubber(config_secrets(config.providers.values()))
        """Every upstream error is scrubbed of every provider credential before it is recorded
        or answered (``_fail``), whichever provider or field it came from."""

    # ---- requests -------------------------------------------------------------------------

    async def chat(self, call: ChatCall, record: CallRecord) -> Result:
        route = self._begin(record, call.request.model, user=call.request.user,
                            body=call.body)
        self._check_generation(record, route, n=call.request.n,
                               max_tokens=call.request.max_tokens,
                               max_completion_tokens=call.request.max_completion_tokens)
        record.metadata = call.request.metadata
        record.wants_json = call.request.wants_json()
        return await self._unary(
            record, route, lambda p, t: p.chat(call, target=t),
            estimate=lambda body: Usage(prompt_tokens=_chat_prompt_tokens(call),
                                        completion_tokens=estimate_tokens(body_text(body)),
                                        estimated=True),
        )

    async def complete(self, call: CompletionCall, record: CallRecord) -> Result:
        route = self._begin(record, call.request.model, user=call.request.user,
                            body=call.body)
        self._check_generation(record, route, n=call.request.n,
                               max_tokens=call.request.max_tokens)
        prompt = sum(estimate_tokens(p) for p in call.request.prompt_texts())
        return await self._unary(
            record, route, lambda p, t: p.complete(call, target=t),
            estimate=lambda body: Usage(prompt_tokens=prompt,
                                        completion_tokens=estimate_tokens(body_text(body)),
                                        estimated=True),
        )

    async def embed(self, call: EmbeddingCall, record: CallRecord) -> Result:
        route = self._begin(record, call.request.model, user=call.request.user,
                            body=call.body)
        texts = call.request.texts()
        if len(texts) > self.limits.max_embedding_inputs:
            raise self.reject(record, errors.InvalidRequest(
                f"'input' has {len(texts)} items; the limit is "
                f"{self.limits.max_embedding_inputs}", param="input"))
        return await self._unary(
            record, route, lambda p, t: p.embed(call, target=t),
            estimate=lambda body: Usage(prompt_tokens=sum(estimate_tokens(t) for t in texts),
                                        estimated=True),
            capture_response=False,  # vectors: large, and no use in a call log
            answer=None,
        )

    def stream_chat(self, call: ChatCall, record: CallRecord) -> AsyncGenerator[StreamItem, None]:
        route = self._begin(record, call.request.model, user=call.request.user,
                            body=call.body, stream=True)
        self._check_generation(record, route, n=call.request.n,
                               max_tokens=call.request.max_tokens,
                               max_completion_tokens=call.request.max_completion_tokens)
        record.metadata = call.request.metadata
        record.wants_json = call.request.wants_json()
        return self._stream(record, route, lambda p, t: p.stream_chat(call, target=t),
                            wants_usage=call.request.wants_usage_chunk(),
                            prompt_tokens=lambda: _chat_prompt_tokens(call))

    def stream_complete(self, call: CompletionCall,
                        record: CallRecord) -> AsyncGenerator[StreamItem, None]:
        route = self._begin(record, call.request.model, user=call.request.user,
                            body=call.body, stream=True)
        self._check_generation(record, route, n=call.request.n,
                               max_tokens=call.request.max_tokens)
        return self._stream(record, route, lambda p, t: p.stream_complete(call, target=t),
                            wants_usage=call.request.wants_usage_chunk(),
                            prompt_tokens=lambda: sum(estimate_tokens(p)
                                                      for p in call.request.prompt_texts()))

    # ---- the parts ------------------------------------------------------------------------

    def _begin(self, record: CallRecord, model: str, *, user: str | None, body: Json,
               stream: bool = False) -> Route:
        record.public_model = model
        record.user = user
        record.stream = stream
        if self._capture is not None:
            record.request_body = self._capture.redact(body)
        try:
            return self.table.resolve(model)
        except errors.GatewayError as exc:
            raise self.reject(record, exc) from None

    def _check_generation(self, record: CallRecord, route: Route, *, n: int | None,
                          max_tokens: int | None, max_completion_tokens: int | None = None,
                          ) -> None:
        """``n`` against the gateway's limit; each token limit the client sent against the
        route's cap, on its own (a provider may read either of them)."""
        if n is not None and n > self.limits.max_n:
            raise self.reject(record, errors.InvalidRequest(
                f"'n' is {n}; the limit is {self.limits.max_n}", param="n"))
        cap = route.max_tokens_cap
        if not cap:
            return
        for name, value in (("max_tokens", max_tokens),
                            ("max_completion_tokens", max_completion_tokens)):
            if value is not None and value > cap:
                raise self.reject(record, errors.InvalidRequest(
                    f"'{name}' is {value}; the limit for model '{route.name}' is {cap}",
                    param=name))

    def reject(self, record: CallRecord, exc: errors.GatewayError) -> errors.GatewayError:
        """Record a request refused before any upstream was tried."""
        self._fail(record, exc)
        self._finish(record)
        return exc

    async def _attempts(self, record: CallRecord, route: Route,
                        run: Callable[[Provider, Target], Awaitable[T]]) -> T:
        """Try the route's targets in order; the next one only after a retryable failure."""
        last = len(route.targets) - 1
        for i, target in enumerate(route.targets):
            provider = self._providers[target.provider]
            started = time.perf_counter()
            try:
                out = await run(provider, target)
            except errors.GatewayError as exc:
                spent = (time.perf_counter() - started) * 1000
                record.upstream_ms += spent
                record.attempts.append(Attempt(target.provider, target.model, exc.status_code,
                                               exc.error_type, spent))
                if exc.retryable and i < last:
                    log.info("target %s/%s failed (%s); trying the next", target.provider,
                             target.model, exc.status_code)
                    continue
                raise
            except asyncio.CancelledError:  # the client left: this attempt ended with it
                spent = (time.perf_counter() - started) * 1000
                record.upstream_ms += spent
                record.attempts.append(Attempt(target.provider, target.model, 499, None, spent))
                raise
            spent = (time.perf_counter() - started) * 1000
            record.upstream_ms += spent
            record.attempts.append(Attempt(target.provider, target.model, 200, None, spent))
            record.provider, record.target_model = target.provider, target.model
            return out
        raise AssertionError("a route always has at least one target")

    async def _unary(self, record: CallRecord, route: Route,
                     run: Callable[[Provider, Target], Awaitable[Result]],
                     *, estimate: Callable[[Json], Usage],
                     capture_response: bool = True,
                     answer: Callable[[Json], str] | None = body_text) -> Result:
        try:
            result = await self._attempts(record, route, run)
            self._account(record, result.usage or estimate(result.body), result.body)
            if answer is not None and self._telemetry is not None:  # only drift reads it
                text = answer(result.body)
                record.answer_text = text if record.wants_json else text[:ANSWER_HEAD]
            if self._capture is not None and capture_response:
                record.response_body = self._capture.redact(result.body)
            return result
        except errors.GatewayError as exc:
            self._fail(record, exc)
            raise
        except asyncio.CancelledError:
            record.status, record.http_status = "cancelled", 499
            raise
        finally:
            self._finish(record)

    async def _open(self, opener: Opener, provider: Provider, target: Target,
                    ) -> tuple[AsyncIterator[Json], Json | asyncio.Task[Json]]:
        """Start a stream and wait for its first chunk, at most one keep-alive interval.

        Returns the stream and either its first chunk or, past the interval, the task still
        waiting for it (the caller then commits to this target).
        """
        stream = opener(provider, target)
        first: asyncio.Task[Json] = asyncio.ensure_future(anext(stream))
        try:
            done, _ = await asyncio.wait({first}, timeout=self.keepalive_s)
        except BaseException:
            await _abandon(stream, first)
            raise
        if not done:
            return stream, first
        try:
            return stream, first.result()
        except StopAsyncIteration:
            await _abandon(stream, None)
            raise errors.BadUpstreamResponse("upstream stream ended before any data") from None
        except BaseException:
            await _abandon(stream, None)
            raise

    async def _stream(self, record: CallRecord, route: Route, opener: Opener, *,
                      wants_usage: bool, prompt_tokens: Callable[[], int]
                      ) -> AsyncGenerator[StreamItem, None]:
        stream: AsyncIterator[Json] | None = None
        pending: asyncio.Task[Json] | None = None  # the first chunk, awaited past a keep-alive
        delivered = False  # a chunk reached the client
        texts: list[str] = []
        head = 0  # characters in ``texts``
        usage: Usage | None = None
        body: Json = {}
        try:
            opened, first = await self._attempts(
                record, route, lambda p, t: self._open(opener, p, t))
            stream = opened
            if isinstance(first, asyncio.Task):
                pending = first
                while not first.done():
                    yield None
                    await asyncio.wait({first}, timeout=self.keepalive_s)
                pending = None
                try:
                    first = first.result()
                except StopAsyncIteration:
                    raise errors.BadUpstreamResponse("upstream stream ended before any data") \
                        from None
            overhead = record.elapsed_ms() - record.upstream_ms
            record.ttft_ms = record.elapsed_ms()
            chunk: Json | None = first
            while chunk is not None:
                if not body:
                    body = chunk
                reported = chunk.get("usage")
                if reported:
                    usage = Usage.from_openai(reported) or usage
                    if not chunk.get("choices"):
                        if wants_usage:
                            yield chunk
                        chunk = await anext(opened, None)
                        continue
                observe_finish(record, chunk)
                if usage is None or head < ANSWER_HEAD or record.wants_json:
                    piece = chunk_text(chunk)
                    texts.append(piece)
                    head += len(piece)
                delivered = True
                yield chunk
                chunk = await anext(opened, None)
            text = "".join(texts)
            record.answer_text = text if record.wants_json else text[:ANSWER_HEAD]
            if usage is None:
                usage = Usage(prompt_tokens=prompt_tokens(),
                              completion_tokens=estimate_tokens(text), estimated=True)
                if wants_usage:
                    yield {**chunk_base(body), "choices": [], "usage": usage.to_openai()}
            self._account(record, usage, body)
            record.upstream_ms = max(0.0, record.elapsed_ms() - overhead)
        except errors.GatewayError as exc:
            self._fail(record, exc)
            if stream is not None:  # committed to a target that then failed
                _attempt_failed(record, exc.status_code, exc.error_type)
            raise
        except (asyncio.CancelledError, GeneratorExit):
            record.status, record.http_status = "cancelled", 499
            if stream is not None and not delivered:
                _attempt_failed(record, 499, None)
            raise
        finally:
            try:
                if stream is not None:
                    await _abandon(stream, pending)
            except Exception:
                log.exception("closing the upstream stream failed for %s", record.id)
            finally:
                if record.usage is None and delivered:
                    # Cut short after chunks went out: the upstream bills what it generated.
                    text = "".join(texts)
                    self._account(record, usage or Usage(
                        prompt_tokens=prompt_tokens(), completion_tokens=estimate_tokens(text),
                        estimated=True), body)
                self._finish(record)

    def _account(self, record: CallRecord, usage: Usage, body: Json) -> None:
        record.usage = usage
        if record.target_model is not None:
            record.cost_usd = self._prices.cost(record.target_model, usage)
        model = body.get("model")
        record.response_model = model if isinstance(model, str) else None
        fingerprint = body.get("system_fingerprint")
        record.system_fingerprint = fingerprint if isinstance(fingerprint, str) else None
        if record.finish_reason is None:
            observe_finish(record, body)

    def _fail(self, record: CallRecord, exc: errors.GatewayError) -> None:
        self._scrubber.error(exc)  # the client's answer is built from ``exc`` too
        record.status = "error"
        record.http_status = exc.status_code
        record.error_type = exc.error_type
        record.error_message = exc.message

    def _finish(self, record: CallRecord) -> None:
        record.finished_at = time.time()
        record.latency_ms = record.elapsed_ms()
        if self._telemetry is not None:
            self._hand_over(self._telemetry.observe, record, "metrics")
        self._hand_over(self._sink.submit, record, "call record sink")

    def _hand_over(self, take: Callable[[CallRecord], None], record: CallRecord,
                   what: str) -> None:
        try:
            take(record)
        except Exception:  # telemetry must never break a request (STYLE.md #10)
            if self._strict_telemetry:
                raise
            log.exception("%s failed for %s", what, record.id)

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()


def _attempt_failed(record: CallRecord, status: int, error_type: str | None) -> None:
    """The committed (last) attempt did not end well after all: record how it ended."""
    if record.attempts:
        attempt = record.attempts[-1]
        attempt.status, attempt.error_type = status, error_type


async def _abandon(stream: AsyncIterator[Any], pending: asyncio.Task[Any] | None) -> None:
    """Stop a stream: cancel a pending read, then close the generator (closing the upstream)."""
    if pending is not None and not pending.done():
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, errors.GatewayError):
            await pending
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
