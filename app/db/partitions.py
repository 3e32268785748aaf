"""Monthly partitions of the Postgres ``calls`` table: names, bounds and DDL (pure functions).

The table is ``PARTITION BY RANGE (created_at)``; the partition for a month is named
``calls_YYYY_MM`` and holds ``[first instant of the month, first instant of the next)`` in UTC.
The names are a contract: ``prune`` finds a partition's month from its name alone.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

PARENT = "calls"
_NAME = re.compile(r"^calls_(\d{4})_(\d{2})$")


def month_of(instant: datetime | float) -> date:
    """The first day of the UTC month containing ``instant`` (aware datetime or epoch seconds)."""
    if not isinstance(instant, datetime):
        instant = datetime.fromtimestamp(instant, UTC)
    elif instant.tzinfo is None:
        raise ValueError("naive datetime: pass an aware one (UTC)")
    instant = instant.astimezone(UTC)
    return date(instant.year, instant.month, 1)


def next_month(month: date) -> date:
    """The first day of the month after ``month``."""
    if month.month == 12:
        return date(month.year + 1, 1, 1)
    return date(month.year, month.month + 1, 1)


def partition_name(month: date) -> str:
    """``calls_YYYY_MM`` for the month containing ``month``."""
    return f"{PARENT}_{month.year:04d}_{month.month:02d}"


def month_from_name(name: str) -> date | None:
    """The month a partition named by ``partition_name`` holds; None for any other name."""
    match = _NAME.match(name)
    if match is None:
        return None
    year, month = int(match.group(1)), int(match.group(2))
    if not 1 <= month <= 12:
        return None
    return date(year, month, 1)


def create_partition_sql(month: date) -> str:
    """``CREATE TABLE IF NOT EXISTS`` DDL for the partition holding ``month`` (idempotent).

    Built from a ``date``, so nothing outside ``[0-9-]`` reaches the SQL text."""
    start = date(month.year, month.month, 1)
    end = next_month(start)
    return (f"CREATE TABLE IF NOT EXISTS {partition_name(start)} PARTITION OF {PARENT} "
            f"FOR VALUES FROM ('{start.isoformat()} 00:00:00+00') "
            f"TO ('{end.isoformat()} 00:00:00+00')")
