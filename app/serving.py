"""The HTTP protocol ``switchboard serve`` runs: uvicorn's httptools protocol plus a deadline on
request headers, ignoring ``h2c`` upgrade offers.

uvicorn times out idle keep-alive connections, but not a connection that is sending its request
headers: one that opens and sends nothing, or trickles a header line now and then, is held
forever (1,000 of them were). ``HeaderDeadlineProtocol`` notes when a connection started waiting
for a request's headers (when it opened, or at the request's first byte) and a sweep once a
second, one per server, closes the connections still waiting after ``header_timeout_s``.

A request answered before its whole body arrived (a 401 or 413 before the body is read, a 408
when it stops arriving) leaves the connection uploading a body nobody reads, and uvicorn keeps
reading and dropping it for as long as the client sends, each byte postponing its keep-alive
timeout: a client trickling a byte a second held the connection forever, and enough of them
filled ``SWITCHBOARD_MAX_CONNECTIONS``. The answer starts the header deadline over, so the
connection is closed ``header_timeout_s`` after it unless the next request's headers are
complete by then; a client that sends the rest of its body promptly keeps its connection (and
reads its answer, where closing at once could reset it mid-upload).

A request offering a protocol upgrade other than a WebSocket one (``Upgrade: h2c``) is served
as an HTTP/1.1 request, body included, and bytes that are not HTTP/1.1 (an unknown method, a
control character in a header, two ``Content-Length``...) get a 400 in OpenAI's error shape
rather than uvicorn's plain text (``UpgradeIgnoringProtocol``, which the header deadline's
protocol extends). A request's headers are bounded there too: llhttp and uvicorn keep every
header line a client sends until the headers end (one connection held 190 MB in 8 s, within
the header deadline), so past ``max_header_bytes`` bytes (``SWITCHBOARD_MAX_HEADER_BYTES``) or
``MAX_HEADER_FIELDS`` fields the request gets a 431 and the connection is closed.

This subclasses a uvicorn class and relies on its parser callbacks (``connection_made``,
``on_message_begin``, ``on_headers_complete``, ``on_response_complete``, a cycle's
``response_complete`` and ``more_body``) and on ``ServerState.connections``;
tests/api/test_connection_limits.py fails loudly if a uvicorn release changes them. Each
request's cycle is a ``HeaderBlockCycle``: uvicorn's, writing the response's headers in one
block (see its docstring; tests/api/test_header_block.py pins what it relies on).

``DrainingServer`` is the uvicorn server ``switchboard serve`` runs with one worker: graceful
shutdown as a load balancer needs it (see its docstring); tests/replicas/test_shutdown.py runs
it as a real process. ``follow_supervisor`` ties ``--workers`` processes to their supervisor.

(Past 400 lines: the protocol classes, the server and the worker hook are all uvicorn's
serving seams, each relying on uvicorn internals the same tests pin; kept together so one
uvicorn upgrade is checked in one place.)
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import os
import re
import signal
import socket
import sys
import time
import weakref
from types import FrameType
from typing import TYPE_CHECKING

import httptools
import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from app import errors
from app.settings import Settings

if TYPE_CHECKING:
    from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, Scope

log = logging.getLogger("switchboard.serving")


SUPERVISOR_PID = "SWITCHBOARD_SUPERVISOR_PID"
"""Set by ``switchboard serve --workers N`` for its workers: the supervisor's process id."""
_PR_SET_PDEATHSIG = 1


def follow_supervisor() -> None:
    """In a worker of ``switchboard serve --workers N``: the kernel sends this process SIGTERM
    (a graceful shutdown) when its supervisor dies, and a worker whose supervisor is already
    gone stops. A supervisor killed with SIGKILL (or by the OOM killer) left its workers
    serving on the port, so a restart could not listen. Linux only (``prctl``); nothing
    elsewhere, or outside such a worker."""
    supervisor = os.environ.get(SUPERVISOR_PID)
    if supervisor is None or not sys.platform.startswith("linux"):
        return
    # A sibling's reload notice (``app.reload.tell_siblings``) must not end a worker whose
    # app has not installed its handler yet (SIGUSR2's default action): noted for it instead.
    signal.signal(SIBLING_RELOAD, _note_sibling_reload)
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if str(os.getppid()) != supervisor:  # it died before the prctl took
        os.kill(os.getpid(), signal.SIGTERM)

SIBLING_RELOAD = signal.SIGUSR2
"""Sent by a worker of ``switchboard serve --workers N`` to its siblings once ``POST
/admin/config/reload`` reloaded it (``app.reload``): reload the config file too."""
_sibling_notices = 0


def _note_sibling_reload(signum: int, frame: FrameType | None) -> None:
    global _sibling_notices
    _sibling_notices += 1


def sibling_notices() -> int:
    """How many sibling reload notices came before the app took ``SIBLING_RELOAD`` over."""
    return _sibling_notices


SWEEP_INTERVAL_S = 1.0
SERVED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
"""The methods some route of the gateway takes (tests/api/test_http_parsing.py checks)."""


@functools.cache
def header_timeout_s() -> float:
    """The process's ``SWITCHBOARD_HEADER_TIMEOUT_S`` (workers read settings from the
    environment, as ``app.main.from_environment`` does)."""
    return Settings().header_timeout_s


@functools.cache
def max_header_bytes() -> int:
    """The process's ``SWITCHBOARD_MAX_HEADER_BYTES`` (read as ``header_timeout_s`` is)."""
    return Settings().max_header_bytes


MAX_HEADER_FIELDS = 100
"""The most header fields a request may have (Apache's, Tomcat's and gunicorn's default): uvicorn
keeps each as a tuple of two bytes objects, ~130 bytes before its text, so 64 KiB of one-letter
headers would have cost a connection 1.6 MB."""


class HeadersTooLarge(Exception):
    """Raised from a parser callback: the request's headers are past the limits (httptools
    stops parsing and raises ``HttpParserCallbackError``, this as its context)."""


class UpgradeIgnoringProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering a request that offers a protocol upgrade other
    than a WebSocket one (``Connection: Upgrade, HTTP2-Settings`` with ``Upgrade: h2c``, as
    ``curl --http2``, Java's HTTP client and Ktor send on ``http://`` URLs) as the HTTP/1.1
    request it also is, body included: RFC 9110 section 7.8 lets a server ignore the offer.

    llhttp ends such a request at its headers (its body is the new protocol's first bytes),
    and uvicorn ignored the offer but not that: the app got an empty body, and the body's bytes
    were parsed as the next request. Here the parser, resumed after the upgrade, is given the
    request's framing headers again (a request line and its ``Content-Length`` or
    ``Transfer-Encoding``, its callbacks muted or their effects taken back) and then the bytes
    after the headers, so the body reaches the request it belongs to, under llhttp's own
    framing rules. This
    relies on httptools resuming its parser after ``HttpParserUpgrade`` (its offset: where
    the headers end) and on uvicorn's ``data_received``, callbacks and cycle
    (``more_body``, ``message_event``); tests/api/test_http_parsing.py fails loudly if a
    release changes them.

    Bytes llhttp refuses as HTTP/1.1 get a 400 in OpenAI's error shape (``_refuse_unparsable``)
    rather than uvicorn's plain text.

    A request whose request line and header lines come to more than ``max_header_bytes``, or
    that has more than ``MAX_HEADER_FIELDS`` header fields, gets a 431 in OpenAI's error shape
    and the connection is closed (``_refuse_headers``), as soon as the bytes read while its
    headers were incomplete pass the limit. Counted per read, not per header: a callback per
    header line would cost every request a Python frame per header, and a single endless header
    line reaches no callback until it ends (httptools keeps it). A read is counted whole: where
    it also holds the request's body, or the end of the request before, a count past the limit
    is checked against the lines parsed (``_header_size``), so no request is refused for its
    body or its predecessor's; a request whose headers end in the read that passed the limit
    costs that check, one under it a comparison."""

    _replaying = False
    """Whether the parser is reading the framing headers given again (callbacks muted)."""
    max_header_bytes = 64 * 1024
    """The most bytes a request's request line and headers may take (the gateway's protocol sets
    ``SWITCHBOARD_MAX_HEADER_BYTES``)."""
    _header_bytes: int | None = 0
    """Bytes read since the current request began, while its headers are incomplete (from the
    connection's start for its first request); ``None`` once they are."""
    _overcounted = False
    """Whether ``_header_bytes`` may include bytes of the request before, read together with this
    request's first bytes."""
    _read = 0
    """The size of the read being parsed."""

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        self._read = len(data)
        if self._header_bytes is not None:
            self._header_bytes += self._read
        while data:
            try:
                self.parser.feed_data(data)
                break
            except httptools.HttpParserError as exc:
                if isinstance(exc.__context__, HeadersTooLarge):
                    self._refuse_headers()
                else:
                    self._refuse_unparsable(exc)
                return
            except httptools.HttpParserUpgrade as upgrade:
                if self._should_upgrade():  # a WebSocket: uvicorn's own handling
                    self.handle_websocket_upgrade()
                    return
                data = data[upgrade.args[0]:]
                try:
                    self._ignore_upgrade()
                except httptools.HttpParserError as exc:
                    self._refuse_unparsable(exc)
                    return
        counted = self._header_bytes
        if counted is not None and (counted > self.max_header_bytes or (
                self.headers is not None and len(self.headers) > MAX_HEADER_FIELDS)):
            self._incomplete_headers_past_limit()

    def _incomplete_headers_past_limit(self) -> None:
        """The request's headers are incomplete and the bytes read for them pass a limit: refuse
        it, unless the count included its predecessor's bytes and the lines parsed do not."""
        if self._overcounted:
            self._overcounted = False
            self._header_bytes = self._header_size()  # at most the bytes read: counted on from it
            if self._header_bytes <= self.max_header_bytes \
                    and len(self.headers) <= MAX_HEADER_FIELDS:
                return
        self._refuse_headers()

    def _header_size(self) -> int:
        """The bytes of the request's URL and of the header lines parsed so far (at least: names
        and values as uvicorn keeps them, each line's ``: `` and CRLF counted)."""
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def _refuse_headers(self) -> None:
        """A 431 in OpenAI's error shape (code ``request_header_fields_too_large``); the
        connection is closed (the rest of its headers is not read)."""
        self.logger.warning("Request headers past the limits received.")
        self._refuse(431, f"Request header fields too large: a request's request line and "
                          f"headers must be at most {self.max_header_bytes} bytes, in at most "
                          f"{MAX_HEADER_FIELDS} header fields.",
                     code="request_header_fields_too_large")

    def _refuse_unparsable(self, exc: httptools.HttpParserError) -> None:
        """A 400 in OpenAI's error shape (code ``invalid_http_request``) for bytes llhttp
        refuses as HTTP/1.1, saying why; the connection is closed (its framing is lost), as
        uvicorn does with a plain-text 400. An unknown method (``FOO``: llhttp knows the
        registered ones, which reach the app and get its 405) is one of them: llhttp stops at
        it, before the path, so no route can say which methods the path takes."""
        self.logger.warning("Invalid HTTP request received.")
        if isinstance(exc, httptools.HttpParserInvalidMethodError):
            message = ("Invalid HTTP request: the method is not one the gateway serves "
                       f"({', '.join(SERVED_METHODS)}).")
        elif "PRI" in str(exc):  # llhttp's "Pause on PRI/Upgrade": HTTP/2's preface
            message = ("Invalid HTTP request: the gateway serves HTTP/1.1, not HTTP/2 with prior "
                       "knowledge (send HTTP/1.1, or offer HTTP/2 with `Upgrade: h2c`, which it "
                       "ignores).")
        elif type(exc) is httptools.HttpParserError and str(exc):  # llhttp's own reason
            message = f"Invalid HTTP request: {str(exc)[:100]}."
        else:
            message = "Invalid HTTP request."
        self._refuse(400, message, code="invalid_http_request")

    def _refuse(self, status: int, message: str, *, code: str) -> None:
        """Answer ``status`` with an OpenAI error (``invalid_request_error``) and close the
        connection."""
        body = orjson.dumps(errors.InvalidRequest(message, code=code).body())
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\n"
                    b"connection: close\r\n\r\n" % len(body))
        self.transport.write(b"".join([*head, body]))
        self.transport.close()

    def _ignore_upgrade(self) -> None:
        """Read the rest of the request whose upgrade offer llhttp stopped at as its body."""
        framing = [b"%s: %s\r\n" % (name, value) for name, value in self.headers
                   if name in (b"content-length", b"transfer-encoding")]
        if not framing or self.cycle is None:
            return  # no body: the request is complete
        self.cycle.more_body = True  # llhttp called it complete at its headers
        self.cycle.message_event.clear()
        version = self.parser.get_http_version().encode()
        # The replay's URL and headers are appended by uvicorn's callbacks and taken back
        # after: muting those (called per header) would cost every request a Python frame
        # per header; only the two called once a request are muted.
        url, headers, expect = self.url, len(self.headers), self.expect_100_continue
        self._replaying = True
        try:
            self.parser.feed_data(b"POST / HTTP/%s\r\n%s\r\n" % (version, b"".join(framing)))
        finally:
            self._replaying = False
            self.url, self.expect_100_continue = url, expect
            del self.headers[headers:]

    def on_message_begin(self) -> None:
        if not self._replaying:
            super().on_message_begin()
            if self._header_bytes is None:  # begun in a read that ended the request before
                self._header_bytes = self._read
                self._overcounted = True

    def on_headers_complete(self) -> None:
        if self._replaying:
            return
        counted = self._header_bytes or 0  # the read holding their end counted whole
        self._header_bytes = None
        if len(self.headers) > MAX_HEADER_FIELDS or (
                counted > self.max_header_bytes and self._header_size() > self.max_header_bytes):
            raise HeadersTooLarge
        super().on_headers_complete()


class HeaderDeadlineProtocol(UpgradeIgnoringProtocol):
    """uvicorn's httptools protocol (ignoring upgrade offers: ``UpgradeIgnoringProtocol``); a
    connection whose request headers are not complete ``header_timeout_s`` after it started
    waiting for them, or after a request was answered before its whole body arrived, is
    closed."""

    waiting_since: float | None = None
    """Loop time since which the connection waits for a request's headers; ``None`` while a
    request is being served or the connection idles between requests (uvicorn's keep-alive
    timeout covers that)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.max_header_bytes = max_header_bytes()
        self.waiting_since = self.loop.time()
        _sweep_for(self.server_state, self.loop)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.waiting_since is None and not self._replaying:
            self.waiting_since = self.loop.time()

    def on_headers_complete(self) -> None:
        if self._replaying:
            return
        self.waiting_since = None
        super().on_headers_complete()
        if type(self.cycle) is RequestResponseCycle:  # the cycle just made, before it runs
            self.cycle.__class__ = HeaderBlockCycle

    def shutdown(self) -> None:
        """uvicorn's server shutting down (the listener is closed). uvicorn closed a connection
        with no request in progress at once, which cut off a request whose bytes had arrived
        and were not parsed yet (a keep-alive client sends its next request whenever it likes):
        the client got no answer and the call no row. Such a connection is kept
        ``SHUTDOWN_LINGER_S`` more instead, and a request that arrives on it meanwhile gets a
        503 ``shutting_down`` with ``Connection: close`` (``refuse_shutting_down``), which a
        client can retry elsewhere; then it is closed. A request in progress finishes, as in
        uvicorn, and its answer closes the connection."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False
            return
        self.app = refuse_shutting_down  # for the requests that start on this connection now
        self.loop.call_later(SHUTDOWN_LINGER_S, self._close_if_idle)

    def _close_if_idle(self) -> None:
        cycle = self.cycle
        if (cycle is None or cycle.response_complete) and not self.transport.is_closing():
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        cycle = self.cycle
        if cycle is not None and cycle.response_complete and cycle.more_body \
                and self.waiting_since is None:  # answered with its body still coming
            self.waiting_since = self.loop.time()


def _allowed(pattern: re.Pattern[bytes]) -> bytes:
    """The bytes ``pattern`` (a one-character class) does not match."""
    return bytes(byte for byte in range(256) if pattern.search(bytes([byte])) is None)


_NAME_OK = _allowed(HEADER_RE) + b"\n"
"""The bytes uvicorn takes in a header name, and the newline ``HeaderBlockCycle`` joins names
with (it counts those apart)."""
_VALUE_OK = _allowed(HEADER_VALUE_RE)
"""The bytes uvicorn takes in a header value."""


class HeaderBlockCycle(RequestResponseCycle):
    """uvicorn's request-response cycle, writing the response's status line and headers as one
    block: uvicorn's ``send`` checks each header with two regular expressions and lower-cases
    and compares it in Python, which cost ~0.6 us a header (a chat answer has 11, a virtual
    key's 17, with its six ``x-ratelimit-*``). This checks all names, and all values, with one
    ``bytes.translate`` each against the bytes uvicorn's expressions accept, and joins the block
    in C: ~0.5% fewer instructions a request for the master key, 1.7% for a key with limits
    (``python -m bench.keys_overhead --instructions 200``, bench/README.md).

    The bytes written and the cycle's state after are uvicorn's; anything else (a header this
    would refuse, ``transfer-encoding`` or ``connection`` set by the app, a connection paused or
    gone, the access log on, the body) goes to uvicorn's own ``send``. This relies on uvicorn's
    cycle internals (its state attributes, ``STATUS_LINE``, ``HEADER_RE``, ``HEADER_VALUE_RE``);
    tests/api/test_header_block.py compares the two byte for byte and fails loudly when a
    uvicorn release changes them."""

    async def send(self, message: ASGISendEvent) -> None:
        if _draining and message["type"] == "http.response.start":
            # The process is shutting down: the client must not send its next request on this
            # connection (it would race the listener's close), so the answer closes it.
            self.keep_alive = False
        if (message["type"] != "http.response.start" or self.response_started
                or self.disconnected or self.flow.write_paused or self.access_log):
            return await super().send(message)
        headers = [*self.default_headers, *message.get("headers", ())]
        try:
            names, values = zip(*headers, strict=True)
            joined = b"\n".join(names)
            refused = (joined.translate(None, _NAME_OK)
                       or joined.count(b"\n") != len(names) - 1
                       or b"".join(values).translate(None, _VALUE_OK))
        except (TypeError, ValueError):  # no headers, or not pairs of bytes
            refused = True
        if refused:
            return await super().send(message)
        lowered = joined.lower().split(b"\n")
        if b"transfer-encoding" in lowered or b"connection" in lowered:
            return await super().send(message)
        self.response_started = True
        self.waiting_for_100_continue = False
        status = message["status"]
        lines = b"\r\n".join(map(b": ".join, zip(lowered, values, strict=True)))
        block = [STATUS_LINE[status], lines, b"\r\n"]
        if self.chunked_encoding is None and b"content-length" in lowered:
            self.expected_content_length = int(values[lowered.index(b"content-length")].decode())
            self.chunked_encoding = False
        if not self.keep_alive:
            block.append(b"connection: close\r\n")
        if self.chunked_encoding is None and self.scope["method"] != "HEAD" \
                and status not in (204, 304):
            self.chunked_encoding = True
            block.append(b"transfer-encoding: chunked\r\n")
        block.append(b"\r\n")
        self.transport.write(b"".join(block))
        return None


_SWEEPS: weakref.WeakKeyDictionary[ServerState, asyncio.TimerHandle] = \
    weakref.WeakKeyDictionary()
"""The pending sweep of each server (each process runs one)."""


def _sweep_for(state: ServerState, loop: asyncio.AbstractEventLoop) -> None:
    if state not in _SWEEPS:
        _SWEEPS[state] = loop.call_later(SWEEP_INTERVAL_S, _sweep, state, loop)


def _sweep(state: ServerState, loop: asyncio.AbstractEventLoop) -> None:
    """Close the connections waiting too long for headers; sweep again while any are open."""
    oldest = loop.time() - header_timeout_s()
    for connection in list(state.connections):
        since = getattr(connection, "waiting_since", None)
        if since is not None and since <= oldest:
            transport = connection.transport
            if not transport.is_closing():
                log.debug("closing a connection whose request headers did not arrive in time")
                transport.close()
    if state.connections:
        _SWEEPS[state] = loop.call_later(SWEEP_INTERVAL_S, _sweep, state, loop)
    else:
        del _SWEEPS[state]


_draining = False
SHUTDOWN_LINGER_S = 1.0
"""How long an idle connection stays open once the server shuts down, refusing the requests
that arrive on it (``HeaderDeadlineProtocol.shutdown``)."""
_SHUTTING_DOWN = orjson.dumps(errors.Overloaded(
    "The gateway is shutting down and did not process this request; send it again (another "
    "replica, or this one once restarted, takes it).", code="shutting_down").body())


async def refuse_shutting_down(scope: Scope, receive: ASGIReceiveCallable,
                               send: ASGISendCallable) -> None:
    """The ASGI app of a request that arrives on a connection after the server began shutting
    down: 503 ``shutting_down`` in OpenAI's error shape, nothing else done (no call row: the
    gateway did not read it)."""
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", b"%d" % len(_SHUTTING_DOWN)),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": _SHUTTING_DOWN})


def draining() -> bool:
    """Whether this process has been told to shut down (``/readyz`` then answers 503)."""
    return _draining


FORCED_EXIT_STATUS = 130
"""128 + SIGINT, as a shell reports a process that Ctrl-C ended."""
HANG_UP_S = 5
"""How long after hanging up on its clients (the grace period over) a request's task may still
run before uvicorn cancels it."""
FORCED_EXIT_MESSAGE = (b"switchboard: Ctrl-C again: exiting now, without finishing the shutdown;"
                       b" the next start replays the call log's journal\n")


def _itself(protocol: asyncio.Protocol) -> asyncio.Protocol:
    return protocol


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a shutdown a load balancer can follow.

    The first SIGTERM or SIGINT marks the process draining (``draining()``: ``/readyz`` answers
    503 from then on) and the server keeps accepting for ``drain_s`` seconds, every answer
    closing its connection (``Connection: close``: a keep-alive client opens a new connection
    for its next request, which another replica takes once the listener is closed, instead of
    racing that close on this one); then uvicorn's own
    graceful shutdown runs: the listening socket is closed, in-flight requests and streams get
    ``timeout_graceful_shutdown`` seconds to finish (then the server hangs up on their clients:
    ``shutdown``), and the lifespan's shutdown flushes the call log. A second signal skips what
    is left of the drain period. The process then exits with status 0: uvicorn re-raises the
    signal it caught after a graceful shutdown, which makes the process die "killed by
    SIGTERM" (status 143, or -15 to a parent), and a supervisor cannot tell that from a crash;
    this server does not re-raise it.

    A Ctrl-C (SIGINT) once the shutdown has begun cuts it short. While requests are in flight,
    it hangs up on their clients: each call ends as a client's disconnect does (``cancelled``,
    499, recorded), and the lifespan's shutdown then flushes the call log as usual. With none in
    flight, or at a further Ctrl-C, it ends the process at once, status 130, whatever the
    shutdown is doing: its closes are each bounded, but together seconds long when Postgres
    hangs. Nothing answered is lost: the call log journals a call's row before its answer ends,
    and the next start replays the journal, as after a ``kill -9`` (``app.calllog.journal``).
    (uvicorn's own second Ctrl-C cancelled the requests and the lifespan, each logged as an
    error with its traceback, and could not stop a lifespan shutdown under way.) A further
    SIGTERM never forces: orchestrators send it, and they send SIGKILL when they mean it."""

    def __init__(self, config: uvicorn.Config, *, drain_s: float = 0.0) -> None:
        super().__init__(config)
        self.drain_s = drain_s
        self._exit_at: float | None = None
        self._announced = False
        self._hung_up = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        global _draining
        _draining = True
        if self.should_exit and sig == signal.SIGINT:
            state = self.server_state
            try:
                loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:  # the loop has stopped: nothing is left to hang up on
                loop = None
            if self._hung_up or loop is None or not (state.connections or state.tasks):
                os.write(2, FORCED_EXIT_MESSAGE)  # no logging in a signal handler (its locks)
                os._exit(FORCED_EXIT_STATUS)
            self._hung_up = True
            loop.call_soon_threadsafe(self._hang_up)
        elif self._exit_at is not None or self.drain_s <= 0:
            self.should_exit = True
        else:
            self._exit_at = time.monotonic() + self.drain_s

    def _hang_up(self) -> None:
        """Close every connection, as if each client went away."""
        log.info("Ctrl-C again: hanging up on %d connection(s); Ctrl-C once more exits at once",
                 len(self.server_state.connections))
        self._close_connections()

    def _close_connections(self) -> None:
        for connection in list(self.server_state.connections):
            transport = connection.transport
            if not transport.is_closing():
                transport.close()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's shutdown, except that running out of ``timeout_graceful_shutdown`` hangs up
        on the clients still connected, as a second Ctrl-C does: each call ends as a disconnect
        (``cancelled``, 499, recorded). uvicorn cancels the requests' tasks instead, and logs
        each as "Exception in ASGI application" with its traceback; its cancel stays as a
        backstop, ``HANG_UP_S`` later, for a task that outlives its connection."""
        await self._take_backlog()
        grace = self.config.timeout_graceful_shutdown
        timer: asyncio.TimerHandle | None = None
        if grace is not None:
            self.config.timeout_graceful_shutdown = grace + HANG_UP_S
            timer = asyncio.get_running_loop().call_later(grace, self._grace_over, grace)
        try:
            await super().shutdown(sockets)
        finally:
            if timer is not None:
                timer.cancel()

    async def _take_backlog(self) -> None:
        """Accept the connections the kernel has completed and the loop has not taken yet,
        before uvicorn closes the listener: closing it resets them, and a client may have sent
        its request on one already (a busy loop left some there for seconds, each a call
        with no answer). Each gets a protocol like any connection; a request that arrived is
        served, and one that comes later is refused (``HeaderDeadlineProtocol.shutdown``)."""
        loop = asyncio.get_running_loop()
        config = self.config
        for server in getattr(self, "servers", ()):
            for listener in server.sockets or ():
                try:
                    sock = socket.socket(fileno=os.dup(listener.fileno()))
                except OSError:
                    continue
                try:
                    sock.setblocking(False)  # as the listener is (one open file, shared)
                    while True:
                        try:
                            accepted, _ = sock.accept()
                        except OSError:  # BlockingIOError: none left
                            break
                        accepted.setblocking(False)
                        protocol: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                            config=config, server_state=self.server_state,
                            app_state=self.lifespan.state)
                        await loop.connect_accepted_socket(
                            functools.partial(_itself, protocol), accepted)
                finally:
                    sock.close()  # the duplicate; the listener is uvicorn's to close
        # One turn of the loop, so that the data already sent on them is read before the
        # shutdown begins (uvloop reads it at once; asyncio's loop a turn later).
        await asyncio.sleep(0)

    def _grace_over(self, grace: float) -> None:
        if not self.server_state.tasks:
            return
        log.warning("graceful shutdown: %d request(s) still running after %g s; hanging up on "
                    "%d connection(s)", len(self.server_state.tasks), grace,
                    len(self.server_state.connections))
        self._close_connections()

    async def on_tick(self, counter: int) -> bool:
        if self._exit_at is not None and not self._announced:
            self._announced = True  # logged here: a signal handler must not take log locks
            log.info("draining: readyz answers 503; accepting for %.1f s more", self.drain_s)
        if self._exit_at is not None and time.monotonic() >= self._exit_at:
            self.should_exit = True
        return await super().on_tick(counter)
