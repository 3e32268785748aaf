"""Spend read-outs from the call log (the source of truth for spend): requests, tokens, cost
and errors per virtual key, team or public model over a time range.

One ``GROUP BY`` over ``calls`` (on Postgres the ``created_at`` range prunes the monthly
partitions; ``key_id`` and ``team_id`` have ``(id, created_at)`` indexes). Calls with no key or
no team (the master key, loopback-only mode, calls refused before authentication) form one group
named ``None``, so the groups of a range always add up to all of its calls.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, TypedDict, get_args

from sqlalchemy import Integer, case, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app import errors
from app.calllog import query
from app.db.engine import DATABASE_ERRORS
from app.db.models import Call

SpendBy = Literal["key", "team", "model"]
SPEND_BY: tuple[str, ...] = get_args(SpendBy)
_GROUP_COLUMNS = {"key": "key_id", "team": "team_id", "model": "public_model"}
_calls = Call.__table__


class SpendRow(TypedDict):
    """One group's totals: calls, tokens billed, cost in USD, calls not ``ok``."""

    group: str | None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    errors: int


def month_start(now: datetime | None = None) -> datetime:
    """Midnight UTC on the first day of ``now``'s month (default: the current time)."""
    moment = query.as_utc(now or datetime.now(UTC))
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _check_by(by: str) -> str:
    if by not in _GROUP_COLUMNS:
        raise errors.InvalidRequest(f"'by' must be one of {', '.join(SPEND_BY)}.", param="by",
                                    code="invalid_value")
    return _GROUP_COLUMNS[by]


async def spend(engine: AsyncEngine, *, by: str, since: datetime | None = None,
                until: datetime | None = None) -> list[SpendRow]:
    """Totals per ``by`` group (``key``: key id, ``team``: team id, ``model``: public model)
    of the calls from ``since`` (inclusive; default: the start of the current UTC month) to
    ``until`` (exclusive; default: no end), the costliest first (ties by group name, ``None``
    last).

    Raises ``InvalidRequest`` naming ``by``, ``since`` or ``until`` for a bad value, and a 503
    ``GatewayError`` (code ``call_log_unavailable``) when the database cannot answer."""
    column = _calls.c[_check_by(by)]
    start = query.utc_moment(since, param="since") or month_start()
    end = query.utc_moment(until, param="until")
    if end is not None and end < start:
        raise errors.InvalidRequest("'until' is earlier than 'since'.", param="until",
                                    code="invalid_value")
    conds = [_calls.c.created_at >= start]
    if end is not None:
        conds.append(_calls.c.created_at < end)
    stmt = (select(column.label("group"),
                   func.count().label("requests"),
                   func.coalesce(func.sum(_calls.c.prompt_tokens), 0).label("prompt_tokens"),
                   func.coalesce(func.sum(_calls.c.completion_tokens), 0)
                   .label("completion_tokens"),
                   func.sum(_calls.c.cost_usd).label("cost_usd"),
                   func.coalesce(func.sum(case((_calls.c.status != "ok", 1), else_=0)), 0,
                                 type_=Integer).label("errors"))
            .where(*conds).group_by(column))
    try:
        async with engine.connect() as conn:
            found = (await conn.execute(stmt)).mappings().all()
    except DATABASE_ERRORS as exc:
        raise query.unavailable(exc) from exc
    rows = [SpendRow(group=r["group"], requests=int(r["requests"]),
                     prompt_tokens=int(r["prompt_tokens"]),
                     completion_tokens=int(r["completion_tokens"]),
                     cost_usd=float(r["cost_usd"] or 0), errors=int(r["errors"]))
            for r in found]
    # Sorted here: Postgres and SQLite disagree on where NULL sorts.
    rows.sort(key=lambda r: (-r["cost_usd"], r["group"] is None, r["group"] or ""))
    return rows
