"""Call rows (``CallRecord.to_row()``) turned into values the ``calls`` table accepts.

A batch is written in one transaction, so one value the database refuses would refuse the whole
batch on every retry, and the writer would be stuck with it. Every value is therefore made
acceptable before it is sent, by rules derived once from the table definition:

- text: NUL characters replaced by U+FFFD (Postgres text cannot hold them; dropped, a model
  name ``ch\\x00at`` would read as a real one), cut to the column's length, unencodable
  surrogates replaced;
- JSON: encoded with ``orjson`` (non-string keys and unknown objects as strings), NULs and
  surrogates replaced as in text (``jsonb`` refuses ``\\u0000``);
- integers clamped to the 32-bit column range; non-finite or out-of-range costs become NULL;
- a missing value in a NOT NULL column becomes that type's zero (``""``, ``0``, ``False``,
  ``[]``, the epoch): visible in the log, instead of blocking it.

``pg_record`` gives a tuple in ``COLUMNS`` order for asyncpg's binary COPY; ``sqlite_record``
one for ``sqlite3`` (times as SQLAlchemy stores them on SQLite, ``YYYY-MM-DD HH:MM:SS.ffffff``
in UTC, so that models read them back; JSON as text; costs as floats).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import JSON, Boolean, Column, DateTime, Float, Integer, Numeric, String, Table

from app.calllog.record import Row
from app.db.models import Base

Convert = Callable[[Any], Any]

CALLS: Table = Base.metadata.tables["calls"]
COLUMNS: tuple[str, ...] = tuple(column.name for column in CALLS.columns)
_INT32 = (-(2**31), 2**31 - 1)
_MAX_COST = 1e10  # numeric(20, 10) holds up to 10 integer digits
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def clean_text(value: Any, limit: int | None = None) -> str:
    """``value`` as a string any database column takes (see the module docstring)."""
    text = value if type(value) is str else str(value)
    if "\x00" in text:  # shown, not dropped: "ch\x00at" must not be stored as "chat"
        text = text.replace("\x00", "\ufffd")
    if limit is not None and len(text) > limit:
        text = text[:limit]
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            text = text.encode("utf-8", "replace").decode()
    return text


def _scrub(value: Any) -> Any:
    """``value`` with every string (keys included) cleaned, recursively."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def json_text(value: Any) -> str:
    """``value`` as JSON text that Postgres ``jsonb`` accepts."""
    options = orjson.OPT_NON_STR_KEYS
    try:
        text = orjson.dumps(value, default=str, option=options).decode()
    except TypeError:  # surrogates, or an integer beyond 64 bits
        return _json_scrubbed(value)
    if "\\u0000" in text:
        return _json_scrubbed(value)
    return text


def _json_scrubbed(value: Any) -> str:
    clean = _scrub(value)
    try:
        return orjson.dumps(clean, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # an integer beyond 64 bits: the standard library has no such limit
        return json.dumps(clean, default=str, ensure_ascii=False)


def _timestamp(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(float(value), UTC)


def _sqlite_timestamp(value: Any) -> str:
    """SQLAlchemy's SQLite storage format, ``YYYY-MM-DD HH:MM:SS.ffffff`` (naive UTC)."""
    return _timestamp(value).replace(tzinfo=None).isoformat(" ", "microseconds")


def _integer(value: Any) -> int:
    if type(value) is int and _INT32[0] <= value <= _INT32[1]:
        return value
    return min(max(int(value), _INT32[0]), _INT32[1])


def _text_column(limit: int | None) -> Convert:
    def convert(value: Any) -> str:
        # Fast path (nearly every value): a short ASCII string without NULs needs no work.
        if (type(value) is str and value.isascii() and "\x00" not in value
                and (limit is None or len(value) <= limit)):
            return value
        return clean_text(value, limit)
    return convert


def _cost(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) and abs(number) < _MAX_COST else None


def _pg_cost(value: Any) -> Decimal | None:
    number = _cost(value)
    # The shortest exact spelling: asyncpg encodes a float through its full binary expansion
    # (50-odd digits), which costs more than the rest of the row together.
    return None if number is None else Decimal(repr(number))


def _converter(column: Column[Any], *, postgres: bool) -> Convert:
    """The function cleaning one column's value (never given None)."""
    kind = column.type
    if isinstance(kind, DateTime):
        return _timestamp if postgres else _sqlite_timestamp
    if isinstance(kind, JSON):
        return json_text
    if isinstance(kind, Boolean):
        return bool
    if isinstance(kind, Integer):
        return _integer
    if isinstance(kind, Numeric) and not isinstance(kind, Float):
        return _pg_cost if postgres else _cost
    if isinstance(kind, Float):
        return float
    if isinstance(kind, String):  # Text is a String without a length
        return _text_column(kind.length)
    raise TypeError(f"no conversion for column {column.name} of type {kind!r}")


def _default(column: Column[Any], convert: Convert) -> Any:
    """What a NOT NULL column gets when the row has no value for it."""
    if column.nullable:
        return None
    kind = column.type
    zeros: list[tuple[type[Any], Any]] = [
        (DateTime, _EPOCH), (JSON, []), (Boolean, False), (Integer, 0), (Float, 0.0),
        (Numeric, 0), (String, "")]
    return convert(next(zero for type_, zero in zeros if isinstance(kind, type_)))


def _plan(*, postgres: bool) -> list[tuple[str, Convert, Any]]:
    plan = []
    for column in CALLS.columns:
        convert = _converter(column, postgres=postgres)
        plan.append((column.name, convert, _default(column, convert)))
    return plan


_PG_PLAN = _plan(postgres=True)
_SQLITE_PLAN = _plan(postgres=False)


def pg_record(row: Row) -> tuple[Any, ...]:
    """``row`` as a tuple in ``COLUMNS`` order, typed for asyncpg's binary COPY."""
    get = row.get
    return tuple([default if (value := get(name)) is None else convert(value)
                  for name, convert, default in _PG_PLAN])


def sqlite_record(row: Row) -> tuple[Any, ...]:
    """``row`` as a tuple in ``COLUMNS`` order for ``sqlite3`` (see the module docstring)."""
    get = row.get
    return tuple([default if (value := get(name)) is None else convert(value)
                  for name, convert, default in _SQLITE_PLAN])
