"""Spend read-outs from the call log (the source of truth for spend): requests, tokens, cost
and errors per virtual key, team or public model over a time range.

The whole hours of a range come from the call hours (``call_hours``, kept by the database as call
rows are written, ``app.db.ledger``): a ``GROUP BY`` over a row per hour, key, team and model, not
over every call. The parts of an hour at either end of a range that does not start or end on the
hour come from ``calls`` (on Postgres the ``created_at`` range prunes the monthly partitions and
its index bounds the scan), so every answer counts exactly the calls stored in the range. The
call hours keep the calls ``switchboard db prune`` removes; the ends read from ``calls`` do not.
Filters (``key_id``, ``team_id``, ``model``) narrow both parts alike, in the same statements,
so a filtered answer counts exactly the calls of the range that match them all (team ``t``'s
spend per model: ``by="model", team_id="t"``).

Calls with no key, team or model (the master key, loopback-only mode, calls refused before
authentication; for the model, calls refused before their request was parsed) form one group
named ``None``, so the groups of a range always add up to all of its calls. A call naming a
model the gateway does not serve (its 404) counts under the model ``-``, in the call hours (since
migration 0021; ``app.db.ledger.model_group``) and in the ends read from ``calls`` alike, as in
the live feed's day counters (``app.calllog.live``): names a client makes up add no groups (and
no rows to the call hours). Its row keeps the name it sent (``GET /admin/calls``). The hours
stored before that migration that it could not fold (their calls pruned) keep their names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, Literal, TypedDict, get_args

from sqlalchemy import Integer, Select, String, case, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app import errors
from app.calllog import query
from app.db.engine import DATABASE_ERRORS
from app.db.ledger import model_group
from app.db.models import Call, CallHour
from app.times import as_utc

SpendBy = Literal["key", "team", "model"]
SPEND_BY: tuple[str, ...] = get_args(SpendBy)
_GROUP_COLUMNS = {"key": "key_id", "team": "team_id", "model": "public_model"}
_calls = Call.__table__
_hours = CallHour.__table__
_HOUR = timedelta(hours=1)
_NO_FILTERS: Mapping[str, str] = MappingProxyType({})
_MODEL_GROUP = literal_column(model_group(), String)
"""A call row's model as the call hours count it (``-`` for a model the gateway does not
serve); ``''`` for none, which ``_merged`` makes ``None``."""


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
    moment = as_utc(now or datetime.now(UTC))
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _check_by(by: str) -> str:
    if by not in _GROUP_COLUMNS:
        raise errors.InvalidRequest(f"'by' must be one of {', '.join(SPEND_BY)}.", param="by",
                                    code="invalid_value")
    return _GROUP_COLUMNS[by]


async def spend(engine: AsyncEngine, *, by: str, since: datetime | None = None,
                until: datetime | None = None, key_id: str | None = None,
                team_id: str | None = None, model: str | None = None) -> list[SpendRow]:
    """Totals per ``by`` group (``key``: key id, ``team``: team id, ``model``: public model)
    of the calls from ``since`` (inclusive; default: the start of the current UTC month) to
    ``until`` (exclusive; default: no end) made with key ``key_id``, by team ``team_id`` and
    for public model ``model`` (each when given), the costliest first (ties by group name,
    ``None`` last).

    Raises ``InvalidRequest`` naming ``by``, ``since``, ``until`` or a filter for a bad value,
    and a 503 ``GatewayError`` (code ``call_log_unavailable``) when the database cannot
    answer."""
    name = _check_by(by)
    filters = {column: _check_filter(value, param=param, column=column)
               for param, column, value in (("key_id", "key_id", key_id),
                                            ("team_id", "team_id", team_id),
                                            ("model", "public_model", model))
               if value is not None}
    start = query.utc_moment(since, param="since") or month_start()
    end = query.utc_moment(until, param="until")
    if end is not None and end < start:
        raise errors.InvalidRequest("'until' is earlier than 'since'.", param="until",
                                    code="invalid_value")
    first = _next_hour(start)
    last = None if end is None else end.replace(minute=0, second=0, microsecond=0)
    if first is None or (last is not None and last <= first):  # no whole hour inside
        parts = [_from_calls(name, start, end, filters)]
    else:
        parts = [_from_hours(name, first, last, filters)]
        if start < first:
            parts.append(_from_calls(name, start, first, filters))
        if last is not None and end is not None and last < end:
            parts.append(_from_calls(name, last, end, filters))
    try:
        async with engine.connect() as conn:
            found = [r for stmt in parts for r in (await conn.execute(stmt)).all()]
    except DATABASE_ERRORS as exc:
        raise query.unavailable(exc) from exc
    rows = _merged(found)
    # Sorted here: Postgres and SQLite disagree on where NULL sorts.
    rows.sort(key=lambda r: (-r["cost_usd"], r["group"] is None, r["group"] or ""))
    return rows


def _check_filter(value: str, *, param: str, column: str) -> str:
    """``value``, when it can name a key, team or model; else ``InvalidRequest`` naming
    ``param``. Empty is refused: the call hours store "none" as ``''`` and ``calls`` as NULL,
    so it would match the unnamed group in one part and nothing in the other."""
    if not value:
        raise errors.InvalidRequest(f"'{param}' is empty; leave it out to count every call.",
                                    param=param, code="invalid_value")
    return query.check_text(value, param=param, column=column)


def _next_hour(moment: datetime) -> datetime | None:
    """The first whole hour at or after ``moment`` (``None``: past the last representable)."""
    floor = moment.replace(minute=0, second=0, microsecond=0)
    if floor == moment:
        return floor
    try:
        return floor + _HOUR
    except OverflowError:
        return None


def _from_calls(name: str, start: datetime, end: datetime | None,
                filters: Mapping[str, str] = _NO_FILTERS) -> Select[Any]:
    """The totals per group of the call rows from ``start`` to ``end`` whose columns equal
    ``filters``; a shadow copy is in no key's or team's group, as the call hours count it
    (``app.db.ledger``)."""
    column: Any = _calls.c[name]
    if name != "public_model":
        column = case((_calls.c.shadow_of.is_(None), column)).label(name)
    else:
        column = _MODEL_GROUP.label(name)
    conds = [_calls.c.created_at >= start,
             *((_MODEL_GROUP if col == "public_model" else _calls.c[col]) == value
               for col, value in filters.items())]
    if any(col != "public_model" for col in filters):  # a key's or team's: not its copies
        conds.append(_calls.c.shadow_of.is_(None))
    if end is not None:
        conds.append(_calls.c.created_at < end)
    return (select(column,
                   func.count(),
                   func.coalesce(func.sum(_calls.c.prompt_tokens), 0),
                   func.coalesce(func.sum(_calls.c.completion_tokens), 0),
                   func.coalesce(func.sum(_calls.c.cost_usd), 0),
                   func.coalesce(func.sum(case((_calls.c.status != "ok", 1), else_=0)), 0,
                                 type_=Integer))
            .where(*conds).group_by(column))


def _from_hours(name: str, first: datetime, last: datetime | None,
                filters: Mapping[str, str] = _NO_FILTERS) -> Select[Any]:
    """The totals per group of the call hours from ``first`` to ``last`` (whole hours) whose
    columns equal ``filters``."""
    column = _hours.c[name]
    conds = [_hours.c.hour >= first.replace(tzinfo=None),
             *(_hours.c[col] == value for col, value in filters.items())]
    if last is not None:
        conds.append(_hours.c.hour < last.replace(tzinfo=None))
    return (select(column, func.sum(_hours.c.requests), func.sum(_hours.c.prompt_tokens),
                   func.sum(_hours.c.completion_tokens), func.sum(_hours.c.cost_usd),
                   func.sum(_hours.c.errors))
            .where(*conds).group_by(column))


def _merged(found: Iterable[Any]) -> list[SpendRow]:
    """One row per group from the parts' rows (``''``, the call hours' "none", and NULL are
    the one group ``None``)."""
    totals: dict[str | None, SpendRow] = {}
    for group, requests, prompt, completion, cost, failed in found:
        row = totals.get(group or None)
        if row is None:
            row = totals[group or None] = SpendRow(group=group or None, requests=0,
                                                   prompt_tokens=0, completion_tokens=0,
                                                   cost_usd=0.0, errors=0)
        row["requests"] += int(requests or 0)
        row["prompt_tokens"] += int(prompt or 0)
        row["completion_tokens"] += int(completion or 0)
        row["cost_usd"] += float(cost or 0)
        row["errors"] += int(failed or 0)
    return list(totals.values())
