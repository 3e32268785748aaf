"""Admission: at most ``max_concurrency`` requests inside the gateway at once, per process.

The outermost ASGI app. A request past the limit is answered at once with 503, ``Retry-After``
and OpenAI's error shape (Anthropic's, ``overloaded_error``, under ``/v1/messages``), before
anything reads its body; a refused model call is still
recorded (caller, ids, the 503). The probes and ``/metrics`` are never refused: a load balancer
must see a busy gateway as alive, and Prometheus must see it busy.

The count is a plain integer: one event loop per process, so no lock is needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from fastapi import FastAPI
from fastapi.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app import errors
from app.api.calls import Endpoint, serve_call
from app.api.endpoints import MODEL_CALLS
from app.api.incoming import Incoming
from app.api.wire import JSONReply
from app.gateway import Gateway
from app.inbound.anthropic import error_body as anthropic_error_body
from app.limits import Header
from app.pipeline import ModelCall
from app.resources import resources_of

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
        await refuse(self.app, exc, scope, receive, send,
                     raw=[(b"retry-after", b"%d" % RETRY_AFTER_S)])


async def refuse(app: FastAPI, exc: errors.GatewayError, scope: Scope, receive: Receive,
                 send: Send, *, raw: Sequence[Header] = ()) -> None:
    """Answer a request refused before it went into the gateway with ``exc`` (and the headers
    ``raw``), without reading its body: a model call refused so is a call like any other, and
    its record says so; under ``/v1/messages`` in Anthropic's shape."""
    if scope["method"] == "POST" and scope["path"] in MODEL_CALLS:
        async def refused(call: ModelCall, gateway: Gateway) -> Response:
            call.headers += raw
            raise exc

        gateway = resources_of(app).gateway
        endpoint = Endpoint(refused, MODEL_CALLS[scope["path"]].error)
        response = await serve_call(gateway, Incoming.from_scope(scope, receive), endpoint)
        await response(scope, receive, send)
        return
    body = anthropic_error_body(exc) if scope["path"].startswith("/v1/messages") \
        else exc.body()
    await JSONReply(orjson.dumps(body), status=exc.status_code, headers={},
                    raw=raw)(scope, receive, send)
