"""The HTTP protocol ``switchboard serve`` runs: uvicorn's httptools protocol plus a deadline on
request headers.

uvicorn times out idle keep-alive connections, but not a connection that is sending its request
headers: one that opens and sends nothing, or trickles a header line now and then, is held
forever (1,000 of them were). ``HeaderDeadlineProtocol`` notes when a connection started waiting
for a request's headers (when it opened, or at the request's first byte) and a sweep once a
second, one per server, closes the connections still waiting after ``header_timeout_s``.

This subclasses a uvicorn class and relies on its parser callbacks (``connection_made``,
``on_message_begin``, ``on_headers_complete``) and on ``ServerState.connections``;
tests/api/test_connection_limits.py fails loudly if a uvicorn release changes them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.settings import Settings

log = logging.getLogger("switchboard.serving")

SWEEP_INTERVAL_S = 1.0


@functools.cache
def header_timeout_s() -> float:
    """The process's ``SWITCHBOARD_HEADER_TIMEOUT_S`` (workers read settings from the
    environment, as ``app.main.from_environment`` does)."""
    return Settings().header_timeout_s


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol; a connection whose request headers are not complete
    ``header_timeout_s`` after it started waiting for them is closed."""

    waiting_since: float | None = None
    """Loop time since which the connection waits for a request's headers; ``None`` while a
    request is being served or the connection idles between requests (uvicorn's keep-alive
    timeout covers that)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.waiting_since = self.loop.time()
        _sweep_for(self.server_state, self.loop)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.waiting_since is None:
            self.waiting_since = self.loop.time()

    def on_headers_complete(self) -> None:
        self.waiting_since = None
        super().on_headers_complete()


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
