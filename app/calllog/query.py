"""The call log's read side: filtered, keyset-paginated queries over the ``calls`` table.

Rows come back newest first, ordered by ``(created_at DESC, id DESC)``; that order is total
(``(id, created_at)`` is the primary key), so a cursor naming the last row of a page resumes
exactly after it: no gaps and no repeats across pages, even when many rows share a
``created_at`` and while new rows are being written (they sort before the cursor).

Every returned row is a JSON-safe dict with the table's column names as keys: times are ISO 8601
UTC strings (``2025-01-31T12:00:00.123456Z``), ``cost_usd`` is a float. Filters are bound as
parameters; no SQL is built from strings. Every filter value is checked before the query: one the
database would refuse (a NUL character, a lone surrogate, a string longer than its column, a time
out of range) is a 400 naming the filter, never a 503 or 500.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BeforeValidator
from sqlalchemy import ColumnElement, String, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from app import errors
from app.calllog.record import json_safe
from app.db.engine import DATABASE_ERRORS, describe_error
from app.db.models import Call
from app.times import WHEN_FORMS, TooFarBack, as_utc, iso, parse_when

MAX_LIMIT = 1000
STATUSES = frozenset({"ok", "error", "cancelled"})

_calls = Call.__table__
_LENGTHS: dict[str, int] = {c.name: c.type.length for c in _calls.columns
                            if isinstance(c.type, String) and c.type.length is not None}
_JSON_COLUMNS = ("attempts", "tags", "request_body", "response_body")
_TEXT_FILTERS = {"model": "public_model", "provider": "provider", "caller": "caller",
                 "key_id": "key_id", "team_id": "team_id", "request_id": "request_id",
                 "config_version": "config_version", "experiment": "experiment",
                 "variant": "variant", "prompt_id": "prompt_id"}
"""Text filters of ``list_calls`` and the column each matches."""
def parse_time(value: str, *, param: str, now: datetime | None = None) -> datetime:
    """An aware UTC datetime from ISO 8601 (naive means UTC) or a relative age such as ``90s``,
    ``15m``, ``1h``, ``7d``, ``2w`` (that long before ``now``, default: the current time), in
    ASCII digits (``app.times.parse_when``, which the CLI's ``--since`` uses too).

    Raises ``InvalidRequest`` naming ``param`` when ``value`` is neither."""
    try:
        return parse_when(value, now=now)
    except TooFarBack:
        raise errors.InvalidRequest(f"'{param}' reaches too far back: {_shown(value)}.",
                                    param=param, code="invalid_value") from None
    except ValueError:
        raise errors.InvalidRequest(
            f"Invalid value for '{param}': {_shown(value)}. Use {WHEN_FORMS}.", param=param,
            code="invalid_value") from None


_WHOLE = re.compile(r"-?[0-9]+")


def _ascii_whole(value: Any) -> Any:
    """A number of a query string or path as written: ASCII digits, an optional ``-`` (Python's
    ``int()``, which pydantic uses, also reads ``1_0`` as 10 and full-width digits)."""
    if isinstance(value, str) and not _WHOLE.fullmatch(value):
        raise ValueError("must be a whole number written in ASCII digits (0-9)")
    return value


WholeNumber = BeforeValidator(_ascii_whole)
"""For ``Annotated[int, WholeNumber, Query(...)]``: every integer of the admin API's query
strings and paths (``limit``, ``prompt_version``, a prompt's version, ``from``, ``to``) is read
with one grammar, the ages of ``since``/``until`` too (``app.times.parse_when``)."""


def _shown(value: str) -> str:
    """``value`` as an error message may quote it: bounded."""
    return repr(value) if len(value) <= 64 else repr(value[:64]) + "..."


def check_text(value: str, *, param: str, column: str) -> str:
    """``value``, when the database can compare it with ``calls.<column>``; else
    ``InvalidRequest`` naming ``param`` (a NUL character or a lone surrogate, which Postgres
    refuses, or more characters than the column holds, which no row has)."""
    if "\x00" in value:
        problem = "it contains a NUL character"
    elif not value.isascii() and not _encodable(value):
        problem = "it is not valid Unicode (a lone surrogate)"
    elif len(value) > (limit := _LENGTHS[column]):
        problem = f"it is longer than {limit} characters"
    else:
        return value
    raise errors.InvalidRequest(f"Invalid value for '{param}': {problem}.", param=param,
                                code="invalid_value")


def not_empty(value: str, *, param: str) -> str:
    """``value``; ``InvalidRequest`` naming ``param`` when it is empty: every admin filter
    refuses ``?model=`` alike (as ``/admin/spend`` does) rather than answering an empty list
    that reads as "no such calls"."""
    if not value:
        raise errors.InvalidRequest(f"'{param}' is empty; leave it out to match every one.",
                                    param=param, code="invalid_value")
    return value


def _encodable(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def encode_cursor(created_at: datetime, call_id: str, listing: str = "calls") -> str:
    """The opaque cursor that resumes ``listing`` (``calls``, ``keys``, ``teams``) after the row
    ``(created_at, call_id)``; the listing is in it, so that another refuses it."""
    raw = json.dumps([iso(created_at), call_id, listing], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, listing: str = "calls") -> tuple[datetime, str]:
    """The ``(created_at, id)`` a cursor of ``listing`` names; ``InvalidRequest`` (param
    ``cursor``, code ``invalid_cursor``) when it was not made by ``encode_cursor`` for that
    listing. A cursor without a listing (from a gateway before they held one) is taken."""
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        parts = json.loads(raw)
        if not isinstance(parts, list) or len(parts) not in (2, 3):
            raise ValueError("a cursor is a list of two or three parts")
        if len(parts) == 3 and parts.pop() != listing:
            raise ValueError("a cursor of another listing")
        stamp, call_id = parts
        if not isinstance(stamp, str) or not isinstance(call_id, str):
            raise ValueError("cursor parts must be strings")
        check_text(call_id, param="cursor", column="id")
        return as_utc(datetime.fromisoformat(stamp)), call_id
    except (binascii.Error, ValueError, TypeError, OverflowError, errors.InvalidRequest):
        # json.JSONDecodeError and UnicodeDecodeError are ValueErrors; OverflowError: a time
        # out of range in UTC.
        raise errors.InvalidRequest(f"Invalid 'cursor': pass back a next_cursor value of this "
                                    f"listing ({listing}) exactly as it was returned.",
                                    param="cursor", code="invalid_cursor") from None


def to_json_row(row: Mapping[Any, Any]) -> dict[str, Any]:
    """A stored row as a JSON-safe dict (same keys): ISO UTC times, ``cost_usd`` as float, and
    the JSON columns ``json_safe`` (a row stored before bodies were capped may nest deeper than
    the API can answer)."""
    out = dict(row)
    for key in _JSON_COLUMNS:
        if out.get(key) is not None:
            out[key] = json_safe(out[key])
    for key in ("created_at", "finished_at"):
        if isinstance(out.get(key), datetime):
            out[key] = iso(out[key])
    if isinstance(out.get("cost_usd"), Decimal):
        out["cost_usd"] = float(out["cost_usd"])
    return out


def unavailable(exc: BaseException) -> errors.GatewayError:
    """The 503 (code ``call_log_unavailable``) for a database that could not answer."""
    return errors.GatewayError(
        f"The call log database is unavailable ({describe_error(exc)}); try again shortly.",
        status=503, code="call_log_unavailable")


def _filters(*, since: datetime | None, until: datetime | None, status: str | None,
             texts: dict[str, str | None]) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    if since is not None:
        conds.append(_calls.c.created_at >= since)
    if until is not None:
        conds.append(_calls.c.created_at < until)
    if status is not None:
        conds.append(_calls.c.status == status)
    for param, value in texts.items():
        if value is not None:
            conds.append(_calls.c[_TEXT_FILTERS[param]] == value)
    return conds


def utc_moment(value: datetime | None, *, param: str) -> datetime | None:
    """``value`` in UTC (naive means UTC); ``InvalidRequest`` naming ``param`` when it has no
    UTC equivalent."""
    if value is None:
        return None
    try:
        return as_utc(value)
    except OverflowError:  # e.g. 0001-01-01 at UTC+1 is before the first representable time
        raise errors.InvalidRequest(f"'{param}' is out of range.", param=param,
                                    code="invalid_value") from None


def _check(*, since: datetime | None, until: datetime | None, status: str | None,
           limit: int, texts: dict[str, str | None]) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise errors.InvalidRequest(f"'limit' must be between 1 and {MAX_LIMIT}.",
                                    param="limit", code="invalid_value")
    if status is not None and status not in STATUSES:
        raise errors.InvalidRequest(f"'status' must be one of {', '.join(sorted(STATUSES))}.",
                                    param="status", code="invalid_value")
    for param, value in texts.items():
        if value is not None:
            not_empty(value, param=param)
            check_text(value, param=param, column=_TEXT_FILTERS[param])
    if since is not None and until is not None and until < since:
        raise errors.InvalidRequest("'until' is earlier than 'since'.", param="until",
                                    code="invalid_value")


async def list_calls(engine: AsyncEngine, *, since: datetime | None = None,
                     until: datetime | None = None, model: str | None = None,
                     provider: str | None = None, status: str | None = None,
                     caller: str | None = None, key_id: str | None = None,
                     team_id: str | None = None, request_id: str | None = None,
                     config_version: str | None = None, experiment: str | None = None,
                     variant: str | None = None, prompt_id: str | None = None,
                     prompt_version: int | None = None, limit: int = 100,
                     cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """One page of calls, newest first, and the cursor of the next page (``None`` on the last).

    ``since`` is inclusive, ``until`` exclusive (naive datetimes are UTC); ``model`` matches the
    public model the client asked for, ``key_id`` and ``team_id`` the virtual key and team
    of the caller, ``request_id`` the client's ``x-request-id``, ``config_version`` the config
    that served the call, ``experiment`` and ``variant`` an A/B experiment's, ``prompt_id`` and
    ``prompt_version`` the prompt template version the request rendered; every filter given
    must hold.
    Raises ``InvalidRequest`` naming the filter for a bad ``limit`` (1..1000), ``status``, time
    range, text (see ``check_text``) or ``cursor``, and a 503 ``GatewayError`` (code
    ``call_log_unavailable``) when the database cannot answer."""
    texts = {"model": model, "provider": provider, "caller": caller, "key_id": key_id,
             "team_id": team_id, "request_id": request_id, "config_version": config_version,
             "experiment": experiment, "variant": variant, "prompt_id": prompt_id}
    since, until = utc_moment(since, param="since"), utc_moment(until, param="until")
    _check(since=since, until=until, status=status, limit=limit, texts=texts)
    conds = _filters(since=since, until=until, status=status, texts=texts)
    if prompt_version is not None:
        if not 1 <= prompt_version <= 2**31 - 1:
            raise errors.InvalidRequest("'prompt_version' must be between 1 and 2147483647.",
                                        param="prompt_version", code="invalid_value")
        conds.append(_calls.c.prompt_version == prompt_version)
    if cursor is not None:
        after_at, after_id = decode_cursor(cursor)
        conds.append(or_(_calls.c.created_at < after_at,
                         and_(_calls.c.created_at == after_at, _calls.c.id < after_id)))
    stmt = (select(_calls).where(*conds)
            .order_by(_calls.c.created_at.desc(), _calls.c.id.desc())
            .limit(limit + 1))  # one extra row says whether there is a next page
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
    except DATABASE_ERRORS as exc:
        raise unavailable(exc) from exc
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        last = page[-1]
        next_cursor = encode_cursor(last["created_at"], last["id"])
    return [to_json_row(r) for r in page], next_cursor


async def get_call(engine: AsyncEngine, call_id: str) -> dict[str, Any] | None:
    """The call with call id ``call_id`` as a JSON-safe dict, or ``None`` when there is none.

    Should the same id occur at several times (rows stored before call ids were the gateway's
    own, when a client reused its ``x-request-id``), the newest is returned. Raises
    ``InvalidRequest`` (param ``call_id``) for an id no row can have (see ``check_text``), a 503
    ``GatewayError`` when the database cannot answer."""
    check_text(call_id, param="call_id", column="id")
    stmt = (select(_calls).where(_calls.c.id == call_id)
            .order_by(_calls.c.created_at.desc()).limit(1))
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(stmt)).mappings().first()
    except DATABASE_ERRORS as exc:
        raise unavailable(exc) from exc
    return None if row is None else to_json_row(row)
