"""Liveness and readiness probes (no authentication, no call record)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from app.resources import NotStarted, resources_of
from app.serving import draining

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    """The gateway has started and is not draining: 200, else 503 (``status``: ``starting``
    or, once the process got SIGTERM, ``draining``).

    With the call log on, the body also says whether its database and spools work
    (``calllog``: ``store``, ``spools.file``, ``spools.redis``, each ``up`` with, when down, a
    ``reason`` and a ``detail``). A sick call log never makes this a 503: calls are still
    answered and their records spooled, and a load balancer must not take every replica out of
    service because the log database is down."""
    try:
        resources = resources_of(request)
    except NotStarted:
        resources = None
    if draining():  # SIGTERM received (app.serving.DrainingServer)
        return JSONResponse({"status": "draining"}, status_code=503)
    if resources is None or not resources.ready:
        return JSONResponse({"status": "starting"}, status_code=503)
    body: dict[str, Any] = {"status": "ready"}
    if resources.calllog is not None:
        body["calllog"] = resources.calllog.writer.health()
    return JSONResponse(body)
