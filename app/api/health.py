"""Liveness and readiness probes (no authentication, no call record)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    """The gateway has started and is not draining: 200, else 503.

    With the call log on, the body also says whether its database and spools work
    (``calllog``: ``store``, ``spools.file``, ``spools.redis``, each ``up`` with, when down, a
    ``reason`` and a ``detail``). A sick call log never makes this a 503: calls are still
    answered and their records spooled, and a load balancer must not take every replica out of
    service because the log database is down."""
    state = request.app.state
    if not getattr(state, "ready", False):
        return JSONResponse({"status": "starting"}, status_code=503)
    body: dict[str, Any] = {"status": "ready"}
    writer = getattr(state, "calllog", None)
    if writer is not None:
        body["calllog"] = writer.health()
    return JSONResponse(body)
