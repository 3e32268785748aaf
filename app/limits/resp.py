"""``RespClient``: the limiter's own Redis client, one pipelined connection speaking RESP2.

(Over 400 lines: the RESP parser, the URL's address and login, and the connection that uses
both are one small client; its login rules, such as a password the server does not need,
live beside the connection that sends them.)

Why not redis-py: an admission is one ``EVALSHA``, and redis-py's pipeline machinery (command
packing, a connection pool, ``StreamReader``/``StreamWriter``, response callbacks) cost ~200 us
of client CPU a round trip on this project's machines (``bench/limiter.py``): most of what keys
and limits added to a call. This client does only what the limiter needs, on one
``asyncio.Protocol``: every round trip is one ``transport.write`` of its commands, and Redis
answers a connection's commands in order, so the replies that arrive are matched to the oldest
round trip still waiting (FIFO), however many are in flight. ``send`` returns a future;
``send_then`` hands the replies to a callback from the connection's reading, in the event-loop
turn they arrive in (no future, no task, no extra turn: the limiter's hot path).

- Addresses: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS; the query may
  set ``ssl_cert_reqs=none|optional|required`` and ``ssl_ca_certs=PATH``) and
  ``unix://[[user]:password@]/path/to/socket[?db=N]``; ``?db=N`` works on every scheme. The
  few other query parameters ``app.settings`` admits are ignored here (they tune redis-py's
  sockets and pools, which this client does not have).
- Replies: bulk and simple strings as ``bytes`` and ``str``, integers, arrays, nil as ``None``;
  an error reply is a ``ReplyError`` *value* in the results (the other commands of the round trip
  still count), never raised.
- Failures raise: ``ConnectionError`` when the connection cannot be made or is lost (every round
  trip in flight on it fails; the next one reconnects), ``TimeoutError`` when connecting takes
  longer than ``connect_timeout_s``. A round trip with no reply within ``reply_timeout_s`` drops
  the connection (Redis answers in order: nothing behind it could be answered either), so a hung
  Redis costs a second, not a connection that waits forever. The limiter's own, much shorter,
  wait is its business (``app.limits.redis``): it stops waiting and leaves the round trip to
  finish here.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import cast
from urllib.parse import parse_qs, unquote, urlsplit

Arg = str | bytes | int
log = logging.getLogger("switchboard.limits")


class ReplyError(Exception):
    """An error reply (``-ERR ...``, ``-NOSCRIPT ...``): ``code`` is its first word."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.code = message.split(" ", 1)[0]


_NO_PASSWORD_SET = ("AUTH <password> called without any password configured",  # Redis 6+
                    "Client sent AUTH, but no password is set")  # before 6
"""How Redis answers a one-argument ``AUTH`` when it has no password."""


def _no_password_set(command: list[Arg], reply: ReplyError) -> bool:
    """Whether ``reply`` refuses a password ``AUTH`` only because the server has none: the
    login is then not needed, as redis-py finds it (its ``HELLO 3 AUTH default PASSWORD``
    logs in to such a server), so a URL with a password the server dropped works for both
    clients alike."""
    return command[0] == "AUTH" and len(command) == 2 and str(reply).startswith(
        _NO_PASSWORD_SET, 4)


@dataclass(frozen=True, slots=True)
class Address:
    """Where Redis listens, and how to log in (parsed from a URL by ``Address.parse``)."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None
    """A Unix socket (``unix://``): ``host`` and ``port`` are then unused."""
    username: str | None = None
    password: str | None = None
    db: int = 0
    tls: ssl.SSLContext | None = None

    @classmethod
    def parse(cls, url: str) -> Address:
        """The address of a Redis URL (see the module docstring); ``ValueError`` if it is not
        one (the message names the URL's scheme, never its password)."""
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"not a Redis URL: scheme {parts.scheme!r}")
        db_text = query.get("db") or (parts.path.lstrip("/") if parts.scheme != "unix" else "")
        try:
            db = int(db_text or 0)
        except ValueError:
            raise ValueError(f"the Redis URL's database is not a number: {db_text!r}") from None
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        if parts.scheme == "unix":
            if not parts.path:
                raise ValueError("a unix:// Redis URL needs the socket's path")
            return cls(path=unquote(parts.path), db=db, username=username, password=password)
        tls = _tls_context(query) if parts.scheme == "rediss" else None
        return cls(host=parts.hostname or "127.0.0.1", port=parts.port or 6379, db=db, tls=tls,
                   username=username, password=password)


def _tls_context(query: dict[str, str]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=query.get("ssl_ca_certs"))
    required = query.get("ssl_cert_reqs", "required").lower()
    if required == "none":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif required == "optional":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_OPTIONAL
    elif required != "required":
        raise ValueError(f"ssl_cert_reqs must be none, optional or required, not {required!r}")
    return context


def bulk(data: bytes) -> bytes:
    """``data`` as a RESP bulk string (callers that send the same arguments often keep these)."""
    return b"$%d\r\n%s\r\n" % (len(data), data)


def encode(commands: Sequence[Sequence[Arg]]) -> bytes:
    """Commands as RESP arrays of bulk strings, back to back."""
    out: list[bytes] = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            out.append(bulk(arg if isinstance(arg, bytes) else str(arg).encode()))
    return b"".join(out)


_INCOMPLETE = ReplyError("INCOMPLETE")
"""``parse``'s answer when the buffer ends before the reply does."""


def parse(buf: bytes | bytearray, pos: int) -> tuple[object, int]:
    """The reply starting at ``pos`` and the position after it, or ``(_INCOMPLETE, pos)``."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return _INCOMPLETE, pos
    kind = buf[pos]
    if kind == 36:  # $: bulk string
        size = int(buf[pos + 1:end])
        if size < 0:
            return None, end + 2
        stop = end + 2 + size
        if len(buf) < stop + 2:
            return _INCOMPLETE, pos
        return bytes(buf[end + 2:stop]), stop + 2
    if kind == 58:  # :
        return int(buf[pos + 1:end]), end + 2
    if kind == 43:  # +
        return buf[pos + 1:end].decode(), end + 2
    if kind == 45:  # -
        return ReplyError(buf[pos + 1:end].decode(errors="replace")), end + 2
    if kind == 42:  # *: array
        count = int(buf[pos + 1:end])
        if count < 0:
            return None, end + 2
        items: list[object] = []
        at = end + 2
        for _ in range(count):
            item, after = parse(buf, at)
            if item is _INCOMPLETE:
                return _INCOMPLETE, pos
            items.append(item)
            at = after
        return items, at
    raise ConnectionError(f"not a RESP reply (type byte {kind!r})")


Answer = Callable[[list[object] | BaseException], None]
"""What a round trip's replies are handed to: the list of them, or why there are none."""


class _Waiting:
    """A round trip in flight: the replies it still expects, whom to hand them to, and when
    it gives up."""

    __slots__ = ("answer", "deadline", "left", "replies")

    def __init__(self, answer: Answer, count: int, deadline: float) -> None:
        self.answer = answer
        self.left = count
        self.replies: list[object] = []
        self.deadline = deadline


def _hand(answer: Answer, result: list[object] | BaseException) -> None:
    """``answer(result)``; a bug in it is logged, never raised into the connection's reading
    (the round trips behind it must still get their replies)."""
    try:
        answer(result)
    except Exception:
        log.exception("a Redis reply's receiver failed")


def _future_of(send_then: Callable[[bytes, int, Answer], None], payload: bytes,
               count: int) -> asyncio.Future[list[object]]:
    """``send_then``'s answer as a future (what ``send`` returns)."""
    future: asyncio.Future[list[object]] = asyncio.get_running_loop().create_future()
    send_then(payload, count, partial(_settle_future, future))
    return future


def _settle_future(future: asyncio.Future[list[object]],
                   result: list[object] | BaseException) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


class _Wire(asyncio.Protocol):
    """One connection: writes round trips, hands replies to them in order."""

    def __init__(self, reply_timeout_s: float) -> None:
        self._reply_timeout_s = reply_timeout_s
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiting: deque[_Waiting] = deque()
        self._watchdog: asyncio.TimerHandle | None = None
        self.lost: BaseException | None = None
        """Why the connection is gone (``None`` while it is up)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not asyncio.Transport subclasses: no isinstance).
        self._transport = cast(asyncio.Transport, transport)

    def send(self, payload: bytes, count: int) -> asyncio.Future[list[object]]:
        return _future_of(self.send_then, payload, count)

    def send_then(self, payload: bytes, count: int, answer: Answer) -> None:
        if self.lost is not None or self._transport is None:
            raise ConnectionError("the connection to Redis is closed")
        self._transport.write(payload)
        self._waiting.append(_Waiting(answer, count, time.monotonic() + self._reply_timeout_s))
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().call_later(
                self._reply_timeout_s, self._check)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        pos = 0
        waiting = self._waiting
        try:
            while waiting:
                reply, after = parse(buffer, pos)
                if reply is _INCOMPLETE:
                    break
                pos = after
                head = waiting[0]
                head.replies.append(reply)
                head.left -= 1
                if head.left == 0:
                    waiting.popleft()
                    _hand(head.answer, head.replies)
        except (ValueError, ConnectionError) as exc:  # garbage: nothing after it can be trusted
            self.abort(ConnectionError(f"unreadable reply from Redis: {exc}"))
            return
        if pos:
            del buffer[:pos]
        if buffer and not waiting:
            self.abort(ConnectionError("Redis sent a reply nothing asked for"))

    def _check(self) -> None:
        """The watchdog: the oldest round trip is overdue, or it looks again when it will be."""
        self._watchdog = None
        if not self._waiting or self.lost is not None:
            return
        left = self._waiting[0].deadline - time.monotonic()
        if left <= 0:
            self.abort(TimeoutError(f"no reply from Redis in {self._reply_timeout_s:g} s"))
            return
        self._watchdog = asyncio.get_running_loop().call_later(left, self._check)

    def abort(self, why: BaseException) -> None:
        """Drop the connection; every round trip on it fails with ``why``."""
        if self.lost is None:
            self.lost = why
        if self._transport is not None:
            self._transport.abort()
        self._fail_all()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost is None:
            self.lost = ConnectionError(f"Redis closed the connection ({exc or 'EOF'})")
        self._fail_all()

    def _fail_all(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self._waiting:
            # Each waiter gets its own exception object: one raised in several tasks would
            # collect every task's traceback.
            why = self.lost
            _hand(self._waiting.popleft().answer, ConnectionError(str(why)) if not isinstance(
                why, TimeoutError) else TimeoutError(str(why)))


class RespClient:
    """One lazily (re)connected, pipelined connection (see the module docstring)."""

    def __init__(self, address: Address, *, connect_timeout_s: float = 1.0,
                 reply_timeout_s: float = 1.0) -> None:
        self.address = address
        self._connect_timeout_s = connect_timeout_s
        self._reply_timeout_s = reply_timeout_s
        self._wire: _Wire | None = None
        self._connecting: asyncio.Future[_Wire] | None = None
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **timeouts: float) -> RespClient:
        return cls(Address.parse(url), **timeouts)

    async def execute(self, commands: Sequence[Sequence[Arg]]) -> list[object]:
        """Send ``commands`` in one write; their replies, in order (see the module docstring
        for what is raised and what is returned)."""
        return await self.send(encode(commands), len(commands))

    def send(self, payload: bytes, count: int) -> asyncio.Future[list[object]]:
        """``execute`` for commands already encoded (``count`` of them in ``payload``), as a
        future."""
        return _future_of(self.send_then, payload, count)

    def send_then(self, payload: bytes, count: int, answer: Answer) -> None:
        """``send``, handing the replies (or the exception that ``send``'s future would raise)
        to ``answer``, called from the connection's reading: on a live connection no future or
        task is made, and the replies reach ``answer`` in the event-loop turn they arrive in
        (the limiter's hot path). Never raises."""
        wire = self._wire
        if wire is not None and wire.lost is None:
            wire.send_then(payload, count, answer)
            return
        connecting = asyncio.ensure_future(self._connected())
        connecting.add_done_callback(partial(self._send_when_connected, payload, count, answer))

    def _send_when_connected(self, payload: bytes, count: int, answer: Answer,
                             connecting: asyncio.Future[_Wire]) -> None:
        if connecting.cancelled():
            _hand(answer, ConnectionError("connecting to Redis was cancelled"))
            return
        failure = connecting.exception()
        if failure is not None:
            _hand(answer, failure)
            return
        wire = connecting.result()
        try:
            wire.send_then(payload, count, answer)
        except ConnectionError as exc:  # lost between connecting and now
            _hand(answer, exc)

    async def _connected(self) -> _Wire:
        if self._closed:
            raise ConnectionError("the Redis client is closed")
        if self._connecting is None:  # one connection attempt, however many callers wait
            self._connecting = asyncio.ensure_future(self._connect())
            self._connecting.add_done_callback(self._connect_done)
        return await asyncio.shield(self._connecting)

    def _connect_done(self, attempt: asyncio.Future[_Wire]) -> None:
        self._connecting = None
        # exception() also marks a failure as retrieved: the callers that waited raised it.
        if not attempt.cancelled() and attempt.exception() is None:
            self._wire = attempt.result()

    async def _connect(self) -> _Wire:
        loop = asyncio.get_running_loop()
        address = self.address
        wire = _Wire(self._reply_timeout_s)
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                if address.path is not None:
                    await loop.create_unix_connection(lambda: wire, address.path)
                else:
                    await loop.create_connection(lambda: wire, address.host, address.port,
                                                 ssl=address.tls)
                hello: list[list[Arg]] = []
                if address.password is not None:
                    hello.append(["AUTH", address.password] if address.username is None
                                 else ["AUTH", address.username, address.password])
                if address.db:
                    hello.append(["SELECT", address.db])
                if hello:
                    replies = await wire.send(encode(hello), len(hello))
                    for command, reply in zip(hello, replies, strict=True):
                        if isinstance(reply, ReplyError) and not _no_password_set(command, reply):
                            # its text names no secret
                            raise ConnectionError(f"Redis refused the login: {reply.code}")
        except TimeoutError:
            wire.abort(TimeoutError("connecting to Redis timed out"))
            raise TimeoutError(
                f"connecting to Redis took over {self._connect_timeout_s:g} s") from None
        except BaseException as exc:
            wire.abort(exc)
            if isinstance(exc, OSError | ConnectionError):
                raise ConnectionError(f"cannot connect to Redis: {exc}") from None
            raise
        return wire

    async def aclose(self) -> None:
        """Drop the connection; round trips in flight fail, later ones raise."""
        self._closed = True
        if self._wire is not None:
            self._wire.abort(ConnectionError("the Redis client is closed"))
            self._wire = None
