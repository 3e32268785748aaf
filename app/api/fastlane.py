"""The hot path: model calls served straight from ASGI, everything else through FastAPI (a
``HEAD`` as its path's ``GET``, ``app.api.head``).

FastAPI's per-request machinery (dependency solving, the router layers, five middlewares) cost
about half of the gateway's CPU per call when measured with py-spy under load (bench/README.md).
The fast lane runs the very same ``serve_*`` functions as the FastAPI routes through the same
``serve_call`` (pipeline, call record, error shape); only the dispatch is shorter.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from app.api.calls import Endpoint, serve_call
from app.api.endpoints import MODEL_CALLS
from app.api.head import serve_head
from app.api.incoming import Incoming
from app.metrics.accumulate import Level
from app.resources import resources_of


class FastLane:
    """ASGI app: POSTs to the model-call paths are served directly; the rest goes to ``app``."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._in_flight: dict[str, Level] = {}
        """``switchboard_requests_in_flight`` by path (a plain number, copied at every flush)."""

    def _level(self, path: str) -> Level:
        level = self._in_flight.get(path)
        if level is None:
            runtime = resources_of(self.app).metrics
            if runtime is None:  # metrics off: count into nothing
                return Level(None)
            metrics = runtime.metrics
            level = self._in_flight[path] = metrics.pending.level(metrics.in_flight.labels(path))
        return level

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = MODEL_CALLS.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None or scope["method"] != "POST":
            if scope["type"] == "http" and scope["method"] == "HEAD":
                await serve_head(self.app, scope, receive, send)  # as its GET (app.api.head)
                return
            await self.app(scope, receive, send)
            return
        incoming = Incoming.from_scope(scope, receive)
        in_flight = self._level(scope["path"])
        in_flight.n += 1
        try:
            await self._serve(endpoint, incoming, scope, receive, send)
        finally:
            in_flight.n -= 1

    async def _serve(self, endpoint: Endpoint, incoming: Incoming, scope: Scope,
                     receive: Receive, send: Send) -> None:
        gateway = resources_of(self.app).gateway
        response = await serve_call(gateway, incoming, endpoint)
        await response(scope, receive, send)
