"""``PostgresStore``: the call log's ``CallStore`` on Postgres.

A batch is committed whole or not at all, on one pooled connection:

- fast path (every batch that is new, i.e. nearly all): binary ``COPY`` of the rows straight
  into ``calls`` (asyncpg ``copy_records_to_table`` on the raw driver connection, 10-80x faster
  than row-by-row inserts). One statement is its own transaction (the spend ledger's trigger
  runs inside it), so no ``BEGIN``/``COMMIT`` round trips (they cost the gateway 0.5-1 us a row
  in batches of 75, ``bench/calllog_writer.py``);
- if that hits a unique violation (some rows are stored already: a batch replayed from the
  spool after a crash between commit and acknowledgement), the statement stored nothing and the
  batch goes again through a staging table, in one transaction: ``CREATE TEMP TABLE
  calls_staging (LIKE calls) ON COMMIT DROP``, ``COPY`` into it, then ``INSERT INTO calls
  SELECT ... ON CONFLICT DO NOTHING``.
  Only the missing rows are inserted, so a batch can be written any number of times and each row
  is stored once.

Going through the staging table every time would be simpler, but costs about a third more
database CPU per row (measured: ``bench/calllog_writer.py``).

Before that, the months the batch touches get their partitions of ``calls`` if missing, and so
does next month (best effort: midnight on the 1st then never waits on DDL); which exist is cached
per store.

Rows are converted one by one (``convert_rows``): a row with a value no column takes is stored
as its stub (``stub_row``) and the rest of its batch as given. Any failure to reach or write the
database raises ``StoreUnavailable`` with the driver's reason
(never the password, never row data), and nothing of the batch is committed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import date
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.calllog.columns import COLUMNS, pg_record
from app.calllog.record import Row, convert_rows
from app.calllog.seams import StoreNotReady, StoreUnavailable
from app.db.engine import DATABASE_ERRORS, describe_error, mask_url
from app.db.migrate import ensure_partitions
from app.db.partitions import month_of, next_month

log = logging.getLogger(__name__)

STAGING = "calls_staging"
_COLUMN_LIST = ", ".join(COLUMNS)
_CREATE_STAGING = f"CREATE TEMP TABLE {STAGING} (LIKE calls) ON COMMIT DROP"
_INSERT = (f"INSERT INTO calls ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM {STAGING} "
           "ON CONFLICT DO NOTHING")


def _undefined_table(exc: BaseException) -> bool:
    """Whether ``exc`` (from asyncpg, or wrapped by SQLAlchemy) says a table is missing."""
    cause = getattr(exc, "orig", None) or exc
    return getattr(cause, "sqlstate", None) == "42P01"


class PostgresStore:
    """Writes call rows to the ``calls`` table (see the module docstring).

    Safe for concurrent ``write`` calls (each takes its own pooled connection). The engine is
    the caller's: ``aclose`` does not dispose of it."""

    def __init__(self, engine: AsyncEngine) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError(f"PostgresStore needs a Postgres engine, got {engine.dialect.name}")
        self._engine = engine
        self._partitions: set[date] = set()
        self._retry_ahead_at = 0.0

    async def write(self, rows: Sequence[Row]) -> int:
        """Insert ``rows``, skipping ones already stored; return how many were new.

        Raises ``StoreUnavailable`` when the batch could not be committed (then none of it is)."""
        if not rows:
            return 0
        records = convert_rows(rows, pg_record)
        try:
            await self._ensure_partitions(records)
            async with self._engine.connect() as connection:
                return await self._copy_and_insert(connection, records)
        except DATABASE_ERRORS as exc:
            where = f"Postgres at {mask_url(self._engine.url)}: {describe_error(exc)}"
            if _undefined_table(exc):  # reachable, but without this version's tables
                raise StoreNotReady(f"{where} (run `switchboard db upgrade`)") from exc
            raise StoreUnavailable(where) from exc

    async def aclose(self) -> None:
        """Nothing to release: the engine belongs to the caller."""

    async def _ensure_partitions(self, records: Sequence[tuple[Any, ...]]) -> None:
        """Partitions for the batch's months (required), and next month's (best effort)."""
        created_at = COLUMNS.index("created_at")
        months = {month_of(record[created_at]) for record in records}
        if not months <= self._partitions:
            await ensure_partitions(self._engine, months)
            self._partitions |= months
        ahead = next_month(month_of(time.time()))
        if ahead in self._partitions or time.monotonic() < self._retry_ahead_at:
            return
        try:
            await ensure_partitions(self._engine, [ahead])
        except DATABASE_ERRORS as exc:
            # Not needed yet: this batch goes on; try again in a minute.
            self._retry_ahead_at = time.monotonic() + 60
            log.warning("could not create the call log's partition for %s yet: %s",
                        ahead.isoformat()[:7], describe_error(exc))
        else:
            self._partitions.add(ahead)

    async def _copy_and_insert(self, connection: AsyncConnection,
                               records: Sequence[tuple[Any, ...]]) -> int:
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        if driver is None:  # pragma: no cover - a checked-out connection always has one
            raise StoreUnavailable("Postgres connection lost")
        try:
            try:
                await driver.copy_records_to_table("calls", records=records, columns=COLUMNS)
                return len(records)
            except asyncpg.UniqueViolationError:
                pass  # some rows are stored already: insert only the others (below)
            async with driver.transaction():
                await driver.execute(_CREATE_STAGING)
                await driver.copy_records_to_table(STAGING, records=records, columns=COLUMNS)
                status = await driver.execute(_INSERT)
        except DATABASE_ERRORS:
            # The connection may be broken (Postgres restarted): never hand it out again.
            await connection.invalidate()
            raise
        return int(status.rsplit(" ", 1)[-1])  # "INSERT 0 <count>"
