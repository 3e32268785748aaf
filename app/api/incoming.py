"""What the gateway reads of a request, taken from the ASGI scope in one pass.

Starlette's ``Headers`` decodes and scans the whole header list on every lookup; the hot path
needs four headers, so it picks them out once.

A body that does not arrive within ``body_timeout_s`` is answered 408 (``BodyDeadlines``).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

from starlette.types import Receive, Scope

from app import errors

# A client's own request id is kept when it is a sane token; anything else is not kept.
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_WANTED = frozenset({b"authorization", b"x-api-key", b"x-request-id", b"content-length",
                     b"content-encoding", b"x-switchboard-deadline-s",
                     b"x-switchboard-variant-key", b"anthropic-beta", b"anthropic-version"})

SWEEP_INTERVAL_S = 1.0


class BodyDeadlines:
    """The body reads in progress on one event loop, and a sweep once a second that cancels
    those older than ``timeout_s``; ``Incoming.body`` turns that cancellation into a 408.

    One timer per process rather than one per request: a timer per body read (``asyncio.timeout``
    or ``call_later``) measured 3-7 us under uvloop, on every call, for bodies that nearly always
    arrive with the headers."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.reading: dict[asyncio.Task[object], float] = {}
        """Task reading a body -> loop time it started."""
        self.expired: set[asyncio.Task[object]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Watch the body reads of the running loop until ``stop``."""
        self._loop = asyncio.get_running_loop()
        _DEADLINES[self._loop] = self
        self._timer = self._loop.call_later(SWEEP_INTERVAL_S, self._sweep)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._loop is not None and _DEADLINES.get(self._loop) is self:
            del _DEADLINES[self._loop]

    def _sweep(self) -> None:
        assert self._loop is not None
        oldest = self._loop.time() - self.timeout_s
        for task, since in self.reading.items():
            if since <= oldest and task not in self.expired:
                self.expired.add(task)
                task.cancel()
        self._timer = self._loop.call_later(SWEEP_INTERVAL_S, self._sweep)


_DEADLINES: dict[asyncio.AbstractEventLoop, BodyDeadlines] = {}
"""The watch of each running loop (one per process; tests run gateways on several loops)."""


@dataclass(slots=True)
class Incoming:
    path: str
    headers: dict[str, str]
    """The headers the gateway uses (lower-case names), first value of each."""
    receive: Receive
    body_wait_ms: float = 0.0
    """How long ``body`` waited for the body to arrive (0 without a ``BodyDeadlines``)."""

    @classmethod
    def from_scope(cls, scope: Scope, receive: Receive) -> Incoming:
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name in _WANTED:
                key, text = name.decode("latin-1"), value.decode("latin-1")
                if key == "anthropic-beta" and key in headers:  # several: one list
                    headers[key] += "," + text
                else:
                    headers.setdefault(key, text)
        return cls(path=scope["path"], headers=headers, receive=receive)

    async def body(self, *, limit: int) -> bytes:
        """The whole request body; ``BodyTooLarge`` (413) past ``limit`` bytes, 415 for a
        compressed one (``Content-Encoding`` other than ``identity``), a 408 when it has not
        arrived within the running ``BodyDeadlines``' timeout; ``ClientDisconnected`` (499) when
        the client leaves before it has sent it all."""
        declared = self.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise errors.BodyTooLarge(f"Request body is larger than the limit of {limit} bytes.")
        encoding = self.headers.get("content-encoding")
        if encoding is not None and encoding.strip().lower() not in ("", "identity"):
            raise errors.InvalidRequest(
                f"The gateway does not take compressed request bodies (Content-Encoding: "
                f"{encoding[:40]}); send the body uncompressed.", status=415,
                code="unsupported_content_encoding")
        loop = asyncio.get_running_loop()
        deadlines = _DEADLINES.get(loop)
        if deadlines is None:  # an app served without its lifespan: no deadline
            return await self._read(limit)
        task = asyncio.current_task()
        assert task is not None
        deadlines.reading[task] = since = loop.time()
        try:
            return await self._read(limit)
        except asyncio.CancelledError:
            if task not in deadlines.expired:
                raise
            # The sweep cancelled the read: answer 408 instead of ending the request, unless
            # something else cancelled the task as well (then it still has a cancel pending).
            deadlines.expired.discard(task)
            if task.uncancel() > 0:
                raise
            raise errors.InvalidRequest(
                f"The request body did not arrive within {deadlines.timeout_s:g} s.",
                status=408, code="body_timeout") from None
        finally:
            del deadlines.reading[task]
            self.body_wait_ms = (loop.time() - since) * 1000

    async def _read(self, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise errors.ClientDisconnected("The client disconnected while sending the body.")
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise errors.BodyTooLarge(
                        f"Request body is larger than the limit of {limit} bytes.")
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def client_request_id(headers: dict[str, str]) -> str | None:
    """The client's ``x-request-id`` when it is a sane token (else ``None``: not kept)."""
    given = headers.get("x-request-id")
    if given and _CLIENT_ID.match(given):
        return given
    return None
