"""Admission: at most ``max_concurrency`` requests inside the gateway at once, per process.

The outermost ASGI app. A request past the limit is answered at once with 503, ``Retry-After``
and OpenAI's error shape, before anything reads its body; a refused model call is still
recorded (caller, ids, the 503). The probes and ``/metrics`` are never refused: a load balancer
must see a busy gateway as alive, and Prometheus must see it busy.

The count is a plain integer: one event loop per process, so no lock is needed.
"""

from __future__ import annotations

from typing import cast

import orjson
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from app import errors
from app.api.deps import new_call, open_call
from app.api.incoming import Incoming
from app.api.v1 import MODEL_CALLS
from app.api.wire import JSONReply, id_headers
from app.gateway import Gateway
from app.settings import Settings

EXEMPT = frozenset({"/healthz", "/readyz", "/metrics"})
RETRY_AFTER_S = 1


class Admission:
    """ASGI wrapper: passes requests to ``inner`` while fewer than ``limit`` are in it."""

    def __init__(self, inner: ASGIApp, *, app: FastAPI, limit: int) -> None:
        self.inner = inner
        self.app = app
        """The FastAPI app (resources in its ``state``), as on ``FastLane``."""
        self.limit = limit
        self.active = 0
        """Requests inside ``inner`` now (exempt paths not counted)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT:
            await self.inner(scope, receive, send)
            return
        if self.active >= self.limit:
            await self._refuse(scope, receive, send)
            return
        self.active += 1
        try:
            await self.inner(scope, receive, send)
        finally:
            self.active -= 1

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        exc: errors.GatewayError = errors.Overloaded(
            f"The gateway is serving its limit of {self.limit} requests; retry in "
            f"{RETRY_AFTER_S} s.", code="overloaded")
        headers = {"retry-after": str(RETRY_AFTER_S)}
        if scope["method"] == "POST" and scope["path"] in MODEL_CALLS:
            # A model call refused here is a call like any other: its record says so.
            state = self.app.state
            gateway = cast(Gateway, state.gateway)
            incoming = Incoming.from_scope(scope, receive)
            record = new_call(incoming)
            try:
                open_call(record, incoming, gateway, cast(Settings, state.settings))
                gateway.reject(record, exc)
            except errors.GatewayError as refused:  # no or a wrong key: recorded as such
                exc = refused
            headers.update(id_headers(record))
        await JSONReply(orjson.dumps(exc.body()), status=exc.status_code,
                        headers=headers)(scope, receive, send)
