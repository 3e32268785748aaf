"""``POST /v1/feedback`` (any caller the gateway admits, on its own calls; the master key and
admin keys on any call) and ``GET /admin/calls/{call_id}/feedback`` (admin): see
``app.feedback``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from app import errors, feedback
from app.api.admin import EngineDep
from app.api.deps import AdminDep, CallerDep
from app.api.guard import GuardedRoute
from app.calllog.query import check_text
from app.db.engine import answering
from app.resources import resources_of

router = APIRouter(route_class=GuardedRoute)  # a JSON body whatever its Content-Type


@router.post("/v1/feedback", status_code=201)
async def post_feedback(spec: feedback.FeedbackIn, caller: CallerDep, request: Request,
                        response: Response) -> dict[str, Any]:
    """Attach a score, a label and/or a comment to a call (many per call). ``request_id`` is
    the call id (``x-switchboard-call-id``) or your ``x-request-id``; an unknown one, or a
    call another virtual key made, is a 404 ``call_not_found``. Each post counts as one
    request against the caller's RPM limits (``feedback.admit``)."""
    resources = resources_of(request)
    engine = resources.engine
    if engine is None:
        raise errors.GatewayError("Feedback needs the call log, which is off on this gateway.",
                                  status=503, code="call_log_unavailable")
    recorder = None if resources.metrics is None else resources.metrics.recorder
    limits = [] if resources.limiter is None \
        else await feedback.admit(resources.limiter, caller.buckets, recorder)
    try:
        async with answering("call log database", code="call_log_unavailable"):
            # a virtual key without an id (none is made so) would find nothing, never every call
            owner = None if caller.admin else caller.key_id or ""
            call_id = await feedback.find_call(engine, spec.request_id, key_id=owner)
            if call_id is None:
                raise errors.NotFound(f"No call with the id {spec.request_id!r}.",
                                      param="request_id", code="call_not_found")
            stored = await feedback.add(engine, call_id, spec)
    except errors.GatewayError as exc:  # admitted: its x-ratelimit-* go with the error too
        exc.headers += limits
        raise
    for name, value in limits:
        response.headers.append(name.decode("latin-1"), value.decode("latin-1"))
    return stored


@router.get("/admin/calls/{call_id}/feedback")
async def call_feedback(call_id: str, admin: AdminDep, engine: EngineDep) -> dict[str, Any]:
    """Every feedback on one call, oldest first; 404 ``call_not_found`` for an unknown call, 400
    for an id no call can have (as ``GET /admin/calls/{call_id}``: cut to 128 characters, a
    longer id found the call its first 128 named)."""
    check_text(call_id, param="call_id", column="id")
    async with answering("call log database", code="call_log_unavailable"):
        found = await feedback.of_call(engine, call_id)
    if found is None:
        raise errors.NotFound(f"No call with id {call_id!r} in the call log.",
                              param="call_id", code="call_not_found")
    return {"object": "list", "data": found}

