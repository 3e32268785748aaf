"""Outbound HTTP for providers: JSON calls and SSE streams over one shared aiohttp session.

aiohttp is the hot-path client because it measured ~10x httpx's native transport on this
hardware (shared/FACTS.md; bench/README.md). Everything an HTTP client can raise is translated
here into ``app.errors``, and upstream error bodies in any of the shapes seen in the wild (OpenAI's
nested ``{"error": {...}}``, vLLM's flat ``{"object": "error", ...}``, Anthropic's
``{"type": "error", "error": {...}}``) are read into the gateway's error tree.

(Just past 400 lines: the client, its error translation and the SSE reader it streams through
are one transport; the line and event parsers are the only parts that stand alone, and they
are a few dozen lines.)
"""

from __future__ import annotations

import asyncio
import email.utils
import io
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import orjson
from aiohttp.http_exceptions import ContentEncodingError
from aiohttp.payload import TOO_LARGE_BYTES_BODY

from app import errors
from app.providers.base import ProviderBase
from app.scrub import Minted, Scrubber, config_secrets

Json = dict[str, Any]

ErrorMapper = Callable[[int, Any, str], errors.GatewayError]


def shown_url(url: str) -> str:
    """``url`` as an error may show it: without a ``user:password@``, query string or fragment,
    where a credential could be (the config refuses them in a provider's URL; this holds for a
    URL built otherwise too)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def new_session() -> aiohttp.ClientSession:
    """The process-wide outbound session (built once, in the app's lifespan)."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60,
                                     ttl_dns_cache=300)
    return aiohttp.ClientSession(connector=connector, auto_decompress=True,
                                 skip_auto_headers=("User-Agent",),
                                 headers={"User-Agent": "switchboard/0.1"})


def request_body(raw: bytes) -> bytes | aiohttp.BytesIOPayload:
    """What a request sends ``raw`` as: the bytes themselves, or past aiohttp's
    ``TOO_LARGE_BYTES_BODY`` (1 MiB: a long prompt, a base64 image, many texts to embed) a
    ``BytesIO`` payload, which aiohttp writes in 64 KiB chunks with a turn of the event loop
    between them. Raw bytes that large make aiohttp warn (a ``ResourceWarning`` that the loop
    may block) from inside the request: an error under pytest, where it answered 500."""
    if len(raw) <= TOO_LARGE_BYTES_BODY:
        return raw
    return aiohttp.BytesIOPayload(io.BytesIO(raw))


def read_error_body(payload: Any, fallback: str) -> tuple[str, str | None, str | None]:
    """(message, code, param) from an upstream error body of any known shape. A numeric code
    (vLLM sends the HTTP status, ``"code": 400``) is no code: OpenAI's are names or null."""
    if isinstance(payload, dict):
        inner = payload.get("error")
        source: Any = inner if isinstance(inner, dict) else payload
        message = source.get("message") if isinstance(source, dict) else None
        if isinstance(inner, str):
            message = inner
        if isinstance(message, str) and message:
            code = source.get("code") if isinstance(source, dict) else None
            param = source.get("param") if isinstance(source, dict) else None
            if code is None and isinstance(source, dict) and isinstance(source.get("type"), str):
                code = source["type"]
            named = None if code is None or isinstance(code, bool | int | float) \
                or str(code).isdigit() else str(code)
            return message, named, param if isinstance(param, str) else None
    return fallback, None, None


def retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds: delay-seconds or an HTTP date (``None``: absent or
    unreadable, a negative number of seconds included: delay-seconds has no sign)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def default_error(status: int, payload: Any, text: str) -> errors.GatewayError:
    message, code, param = read_error_body(payload, text[:500] or f"HTTP {status}")
    return errors.from_upstream_status(status, message, code=code, param=param)


@dataclass(slots=True)
class SSEEvent:
    event: str | None
    data: str


class Upstream:
    """One upstream base URL with its headers, timeouts and error translation; the errors it
    raises are scrubbed of ``secrets`` and of what the ``minted`` sources give (``app.scrub``)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        headers: Mapping[str, str],
        timeout_s: float,
        connect_timeout_s: float,
        secrets: tuple[str, ...] = (),
        minted: tuple[Minted, ...] = (),
        error_mapper: ErrorMapper = default_error,
        params: Mapping[str, str] | None = None,
    ) -> None:
        self._session = session
        self.base_url = base_url.rstrip("/")
        self.shown = shown_url(self.base_url)
        """How errors name the upstream."""
        self._headers = {"Content-Type": "application/json", **headers}
        self._params = dict(params) if params else None
        self._connect_timeout_s = connect_timeout_s
        self._timeout, self._stream_timeout = self._timeouts(timeout_s)
        self._own_timeouts: dict[float, tuple[aiohttp.ClientTimeout, aiohttp.ClientTimeout]] = {}
        """A target's own ``timeout_s`` -> its (unary, stream) timeouts, built once."""
        self._scrubber = Scrubber(secrets, minted=minted)
        self._error_mapper = error_mapper

    @classmethod
    def from_config(
        cls,
        session: aiohttp.ClientSession,
        config: ProviderBase,
        *,
        base_url: str,
        headers: Mapping[str, str],
        timeout_s: float | None = None,
        error_mapper: ErrorMapper = default_error,
        params: Mapping[str, str] | None = None,
    ) -> Upstream:
        """An upstream of a provider's config: its timeouts (``timeout_s`` instead of the
        config's, for probes), and every credential the config holds (``SecretStr`` fields,
        secret-looking ``headers``) scrubbed from the errors it raises."""
        return cls(session, base_url=base_url, headers=headers,
                   timeout_s=config.timeout_s if timeout_s is None else timeout_s,
                   connect_timeout_s=config.connect_timeout_s,
                   secrets=config_secrets([config]), error_mapper=error_mapper, params=params)

    def _timeouts(self, timeout_s: float) -> tuple[aiohttp.ClientTimeout, aiohttp.ClientTimeout]:
        """A unary call's (``timeout_s`` for the whole answer) and a stream's (``timeout_s``
        between reads, no total)."""
        return (aiohttp.ClientTimeout(total=timeout_s, sock_connect=self._connect_timeout_s),
                aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout_s,
                                      sock_read=timeout_s))

    def _timeouts_for(self, timeout_s: float | None
                      ) -> tuple[aiohttp.ClientTimeout, aiohttp.ClientTimeout]:
        if timeout_s is None:
            return self._timeout, self._stream_timeout
        found = self._own_timeouts.get(timeout_s)
        if found is None:
            found = self._own_timeouts[timeout_s] = self._timeouts(timeout_s)
        return found

    def _scrub(self, error: errors.GatewayError) -> errors.GatewayError:
        return self._scrubber.error(error)

    def _redirected(self, response: aiohttp.ClientResponse) -> errors.GatewayError:
        """Redirects are never followed: the prompt would be re-sent, and on the same host with
        the credentials, to wherever the upstream points."""
        return errors.BadUpstreamResponse(
            f"upstream {self.shown} answered {response.status} (a redirect); model calls do "
            "not follow redirects: check the provider's base_url")

    async def _raise_for(self, response: aiohttp.ClientResponse) -> None:
        raw = await response.read()
        text = raw.decode("utf-8", "replace")
        try:
            payload: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            payload = None
        error = self._error_mapper(response.status, payload, text)
        if isinstance(error, errors.UpstreamError):
            # The header wins; without one, keep what the mapper read from the body (Google's
            # RetryInfo.retryDelay).
            after = retry_after(response.headers.get("Retry-After"))
            if after is not None:
                error.retry_after_s = after
        raise self._scrub(error)

    def _translate(self, exc: BaseException) -> errors.GatewayError:
        """The gateway error for an HTTP client's exception: a connection refused, or broken
        before the answer was whole (a body short of its ``Content-Length``, a chunked stream
        cut before its end), is an ``UpstreamConnectError``, which the same target is retried
        for and the next one tried after (before anything reached the client); a body that
        does not decode (its ``Content-Encoding``) is a ``BadUpstreamResponse``."""
        if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
            return errors.UpstreamTimeout(f"upstream {self.shown} timed out")
        if isinstance(exc, aiohttp.ClientConnectorError):
            return errors.UpstreamConnectError(f"cannot connect to upstream {self.shown}")
        if isinstance(exc, aiohttp.ClientPayloadError):
            if isinstance(exc.__cause__, ContentEncodingError):
                return errors.BadUpstreamResponse(
                    f"upstream {self.shown} sent a body that does not decode")
            return errors.UpstreamConnectError(f"upstream {self.shown} cut the response short")
        return errors.UpstreamConnectError(
            f"upstream {self.shown} connection failed: {type(exc).__name__}"
        )

    async def get_json(self, path: str) -> Any:
        """GET a JSON document (used for probes such as vLLM's ``/version``)."""
        return await self.request("GET", self.base_url + path, limits=self._timeout)

    async def post_json(self, path: str, payload: Json, *, timeout_s: float | None = None,
                        headers: Mapping[str, str] | None = None) -> Json:
        """POST ``payload``; the parsed JSON object of a 2xx answer, else a gateway error.
        ``timeout_s``: a target's own timeout instead of the provider's; ``headers``: sent
        besides (and over) the upstream's."""
        body = await self.post(path, payload, timeout_s=timeout_s, headers=headers)
        if not isinstance(body, dict):
            raise errors.BadUpstreamResponse("upstream sent JSON that is not an object")
        return body

    async def post(self, path: str, payload: Json, *, timeout_s: float | None = None,
                   headers: Mapping[str, str] | None = None) -> Any:
        """POST ``payload``; the parsed JSON value of a 2xx answer, whatever its type (TEI's
        ``/embed`` answers a bare array), else a gateway error."""
        return await self.request("POST", self.base_url + path, payload,
                                  limits=self._timeouts_for(timeout_s)[0],
                                  headers={**self._headers, **headers} if headers else None)

    async def request(self, method: str, url: str, payload: Json | None = None, *,
                      limits: aiohttp.ClientTimeout,
                      headers: Mapping[str, str] | None = None) -> Any:
        """One JSON request to ``url`` within ``limits`` (``headers``: all of them, instead of
        the upstream's); the parsed JSON value of a 2xx answer, else a gateway error (a
        redirect among them)."""
        try:
            async with self._session.request(
                method, url, data=None if payload is None else request_body(orjson.dumps(payload)),
                headers=self._headers if headers is None else headers, params=self._params,
                timeout=limits, allow_redirects=False,
            ) as response:
                if response.status >= 300:
                    if response.status < 400:
                        raise self._redirected(response)
                    await self._raise_for(response)
                raw = await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._scrub(self._translate(exc)) from None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise errors.BadUpstreamResponse(f"upstream {self.shown} sent invalid JSON") \
                from None

    async def stream_sse(self, path: str, payload: Json, *, timeout_s: float | None = None,
                         headers: Mapping[str, str] | None = None
                         ) -> AsyncGenerator[SSEEvent, None]:
        """POST ``payload`` and yield server-sent events as they arrive (``timeout_s``: a
        target's own longest wait between reads instead of the provider's; ``headers``: sent
        besides, and over, the upstream's).

        Errors before the first event (connect, status, a stream closed or cut before its first
        event ended by a blank line, even if comments or part of a line came: an
        ``UpstreamConnectError``) are raised from the first ``__anext__``, which is
        what lets the gateway retry the target or fall back to another. Closing the generator closes
        the upstream connection, which cancels the generation upstream.
        """
        try:
            async with self._session.post(
                self.base_url + path, data=request_body(orjson.dumps(payload)),
                headers={**self._headers, **headers} if headers else self._headers,
                params=self._params, timeout=self._timeouts_for(timeout_s)[1],
                allow_redirects=False,
            ) as response:
                if response.status >= 300:
                    if response.status < 400:
                        raise self._redirected(response)
                    await self._raise_for(response)
                parser = SSEParser()
                lines = LineBuffer(f"upstream {self.shown}")
                begun = False  # an event ended by its blank line was yielded
                try:
                    while chunk := await response.content.readany():
                        for raw_line in lines.feed(chunk):
                            found = parser.line(raw_line)
                            if found is not None:
                                begun = True
                                yield found
                except aiohttp.ClientPayloadError:
                    # The connection was cut. aiohttp raises the stored error before handing
                    # over bytes it had already buffered: relay their whole lines, then fail.
                    for found in parser.lines(lines.rest() + _buffered(response.content)):
                        yield found
                    raise
                if not begun:
                    # Ended before its first whole event: no body at all, keep-alive comments
                    # only (``: ping``), or a first line cut midway. A stream without a length
                    # ends at the connection's close, where aiohttp sees no error, so this is a
                    # connection that broke (a server killed during prefill), not an answer;
                    # the same in every framing (a chunked one cut short raises above).
                    raise errors.UpstreamConnectError(
                        f"upstream {self.shown} closed the stream before its first event")
                rest = lines.rest()
                found = parser.line(rest) if rest else None
                if found is not None:
                    yield found
                found = parser.end()
                if found is not None:
                    yield found
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._translate(exc) from None


MAX_LINE_BYTES = 8 * 1024 * 1024
"""The longest line an upstream stream may send: the default ``limits.max_body_bytes``, so a
delta as large as a request the gateway takes (a tool call's arguments, a base64 image) passes.
aiohttp's own line reader stops at twice its read buffer (512 KiB)."""


class LineBuffer:
    """Whole lines out of a byte stream's chunks (split at ``\\n``, which they lose), at most
    ``MAX_LINE_BYTES`` each: past that, the stream is a ``BadUpstreamResponse`` naming
    ``source`` (a 502, or an error frame once chunks have reached the client)."""

    __slots__ = ("_pieces", "_size", "_source")

    def __init__(self, source: str) -> None:
        self._source = source
        self._pieces: list[bytes] = []  # the unfinished line, joined once it ends
        self._size = 0

    def _too_long(self) -> errors.BadUpstreamResponse:
        self._pieces, self._size = [], 0
        return errors.BadUpstreamResponse(
            f"{self._source} sent a stream line longer than {MAX_LINE_BYTES} bytes")

    def feed(self, chunk: bytes) -> list[bytes]:
        """The lines ``chunk`` completes; the unfinished one is kept for the next chunk."""
        if b"\n" not in chunk:
            self._pieces.append(chunk)
            self._size += len(chunk)
            if self._size > MAX_LINE_BYTES:
                raise self._too_long()
            return []
        if self._pieces:
            self._pieces.append(chunk)
            chunk = b"".join(self._pieces)
        lines = chunk.split(b"\n")
        last = lines.pop()
        self._pieces, self._size = ([last], len(last)) if last else ([], 0)
        if len(chunk) > MAX_LINE_BYTES and (self._size > MAX_LINE_BYTES or any(
                len(line) > MAX_LINE_BYTES for line in lines)):
            raise self._too_long()
        return lines

    def rest(self) -> bytes:
        """The unfinished line (the stream's last, when it ended without a newline)."""
        rest = b"".join(self._pieces)
        self._pieces, self._size = [], 0
        return rest


class SSEParser:
    """Server-sent events from lines (``text/event-stream``): ``event:`` and ``data:`` fields,
    one event per blank line."""

    __slots__ = ("data", "event")

    def __init__(self) -> None:
        self.event: str | None = None
        self.data: list[str] = []

    def line(self, raw: bytes) -> SSEEvent | None:
        """Take one line; the event it completes, if any."""
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            return self.end()
        if line.startswith("data:"):
            self.data.append(line[5:].lstrip(" "))
        elif line.startswith("event:"):
            self.event = line[6:].strip()
        return None

    def lines(self, raw: bytes) -> list[SSEEvent]:
        """The events completed by the whole lines in ``raw`` (a trailing partial line is
        dropped: a cut connection never finished it)."""
        found = []
        for piece in raw.splitlines(keepends=True):
            if piece.endswith(b"\n"):
                event = self.line(piece)
                if event is not None:
                    found.append(event)
        return found

    def end(self) -> SSEEvent | None:
        """The event in progress, complete at a blank line or at the end of the stream."""
        event = SSEEvent(self.event, "\n".join(self.data)) if self.data else None
        self.event, self.data = None, []
        return event


def _buffered(content: aiohttp.StreamReader) -> bytes:
    """Bytes received but not yet read from ``content``. aiohttp keeps them in the private
    ``_buffer`` (a deque of bytes, the first one read up to ``_buffer_offset``) and offers no
    public way to read them once the stream has failed; tests/providers/test_upstream_errors.py
    fails loudly if that changes."""
    chunks = list(content._buffer)
    if not chunks:
        return b""
    chunks[0] = chunks[0][content._buffer_offset:]
    return b"".join(chunks)


async def drain(events: AsyncIterator[object]) -> None:
    """Read a stream (server-sent events, AWS event-stream messages) to its end after its
    terminal event, so that its connection returns to the pool; closing it early would make the
    next request open a new connection (measured: ~1 ms of added time to first token)."""
    async for _ in events:
        pass

