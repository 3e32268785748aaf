"""Feedback on calls (``POST /v1/feedback``): scores, labels and comments stored beside the call
log, many per call, for the experiment reports and for anyone reading a call.

A feedback names its call by ``request_id``: the gateway's call id (``x-switchboard-call-id``),
or the client's ``x-request-id`` (then the newest call sent with it). The call must be in the
call log: its row is written within a second of its answer, so the endpoint waits up to
``WAIT_FOR_ROW_S`` for a call it does not find yet before answering 404.

Feedback on a call comes from whoever made it: a virtual key finds only its own calls (another
key's call is a 404, as if it did not exist, so call ids cannot be probed); the master key and
admin keys find every call. A ``score`` is a number within ``MAX_SCORE`` either side of 0: any
rating scale fits (0 to 1, -1 to 1, 1 to 5, 0 to 100), and the experiment reports' sums and
variances of them stay finite.

Each post counts as one request against the caller's RPM limits, its key's and its team's, in
the same windows as its model calls (``admit``): over a limit it is refused as a model call is
(429 ``rate_limit_exceeded`` with ``Retry-After`` and ``x-ratelimit-*-requests``; 503
``limiter_unavailable`` when the limiter cannot decide and fails closed). It charges no tokens
and no spend, so neither a TPM limit nor a spent budget refuses it: a rating that arrives after
the budget ran out is still kept. The master key is not limited, as for model calls.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import insert, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import Call, Feedback
from app.limits import Bucket, Header, Limiter
from app.metrics.recorder import Recorder
from app.stages.admit import refusal
from app.times import iso

WAIT_FOR_ROW_S = 2.0
MAX_SCORE = 1_000_000.0
"""The largest ``score`` taken, either side of 0."""
_calls = Call.__table__
_feedback = Feedback.__table__


class FeedbackIn(BaseModel):
    """What a client sends; at least one of ``score``, ``label`` and ``comment``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    request_id: Annotated[str, Field(min_length=1, max_length=128)]
    score: Annotated[float, Field(ge=-MAX_SCORE, le=MAX_SCORE, allow_inf_nan=False,
                                  strict=True)] | None = None
    """A number (``true`` or ``"5"`` is a 400, not a score of 1 or 5)."""
    label: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    comment: Annotated[str, Field(max_length=4000)] | None = None

    @field_validator("request_id", "label", "comment")
    @classmethod
    def _no_nul(cls, text: str | None) -> str | None:
        """No NUL (Postgres' text refuses it: its error reached the client, naming no field)."""
        if text is not None and "\x00" in text:
            raise ValueError("may not contain NUL characters")
        return text

    @field_validator("comment")
    @classmethod
    def _said(cls, comment: str | None) -> str | None:
        """An empty comment says nothing (a form's empty box beside a score): none."""
        return comment or None

    @model_validator(mode="after")
    def _something(self) -> FeedbackIn:
        if self.score is None and self.label is None and self.comment is None:
            raise ValueError("give at least one of score, label and comment (not empty)")
        return self


async def admit(limiter: Limiter, buckets: tuple[Bucket, ...],
                recorder: Recorder | None = None) -> list[Header]:
    """Charge one feedback post of a caller with ``buckets`` (``Caller.buckets``) to their RPM
    limits: the ``x-ratelimit-*-requests`` headers to answer with, or the refusal raised with
    them and its ``Retry-After`` (``GatewayError.headers``), counted as a model call's is in
    ``switchboard_ratelimit_rejections_total`` (``recorder``)."""
    limited = rpm_only(buckets)
    if not limited:
        return []
    decision = limiter.admit_now(limited, 0)
    if decision is None:
        decision = await limiter.admit(limited, 0)
    headers = list(decision.headers())  # (a credit's decision shares its list)
    if decision.admitted:
        return headers
    if recorder is not None and decision.reason == "rate_limit":
        recorder.limit_rejected(decision.scope or "key")
    exc = refusal(decision, headers)
    exc.headers = headers
    raise exc


@lru_cache(maxsize=4096)
def rpm_only(buckets: tuple[Bucket, ...]) -> tuple[Bucket, ...]:
    """The buckets with an RPM limit, without their TPM limits and budgets. One tuple per
    caller's tuple (cached): the Redis limiter keeps what it encodes for a tuple, and its
    admission credits, by the tuple's identity. Their request windows are the model calls'."""
    return tuple(dataclasses.replace(b, tpm=None, budget_usd=None)
                 for b in buckets if b.rpm is not None)


async def find_call(engine: AsyncEngine, request_id: str, *,
                    key_id: str | None) -> str | None:
    """The id of the call ``request_id`` names, waiting up to ``WAIT_FOR_ROW_S`` for its row.
    ``key_id``: only a call this virtual key made (``None``: any call, for the master key and
    admin keys)."""
    stmt = (select(_calls.c.id)
            .where(or_(_calls.c.id == request_id, _calls.c.request_id == request_id)))
    if key_id is not None:
        stmt = stmt.where(_calls.c.key_id == key_id)
    stmt = (stmt
            .order_by((_calls.c.id == request_id).desc(), _calls.c.created_at.desc()).limit(1))
    deadline = time.monotonic() + WAIT_FOR_ROW_S
    while True:
        async with engine.connect() as conn:
            found = (await conn.execute(stmt)).scalar()
        if found is not None or time.monotonic() >= deadline:
            return found
        await asyncio.sleep(0.2)


async def add(engine: AsyncEngine, call_id: str, feedback: FeedbackIn) -> dict[str, Any]:
    """Store ``feedback`` on the call ``call_id``; the stored feedback."""
    now = datetime.now(UTC)
    row: dict[str, Any] = {"id": os.urandom(16).hex(), "call_id": call_id, "created_at": now,
                           "score": feedback.score, "label": feedback.label,
                           "comment": feedback.comment}
    async with engine.begin() as conn:
        await conn.execute(insert(Feedback).values(**row))
    return {**row, "object": "feedback", "created_at": iso(now)}


async def of_call(engine: AsyncEngine, call_id: str) -> list[dict[str, Any]] | None:
    """Every feedback on one call, oldest first, times in UTC ISO 8601 with ``Z`` as the call
    log's; ``None`` when there is neither a call ``call_id`` nor feedback on one (the feedback
    on a call whose row was pruned is still read back)."""
    stmt = (select(_feedback).where(_feedback.c.call_id == call_id)
            .order_by(_feedback.c.created_at, _feedback.c.id))
    call = select(_calls.c.id).where(_calls.c.id == call_id).limit(1)
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).mappings().all()
        if not rows and (await conn.execute(call)).first() is None:
            return None
    return [{**row, "object": "feedback", "created_at": iso(row["created_at"])} for row in rows]
