"""``SqliteStore``: the call log's ``CallStore`` in the embedded mode (one SQLite file).

A batch is one ``INSERT OR IGNORE`` executemany in one transaction, with values encoded by
``app.calllog.columns`` (cheaper than SQLAlchemy's type processing) one row at a time
(``convert_rows``: a row with a value no column takes is stored as its stub). Rows already
stored (same ``(id, created_at)``) are skipped, so replaying a batch never duplicates. Failures
raise
``StoreUnavailable`` (e.g. the file is locked by another writer past the busy timeout, or the
disk is full), and nothing of the batch is committed.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from app.calllog.columns import COLUMNS, sqlite_record
from app.calllog.record import Row, convert_rows
from app.calllog.seams import StoreUnavailable
from app.db.engine import DATABASE_ERRORS, describe_error, mask_url

_INSERT = (f"INSERT OR IGNORE INTO calls ({', '.join(COLUMNS)}) "
           f"VALUES ({', '.join('?' for _ in COLUMNS)})")


class SqliteStore:
    """Writes call rows to the ``calls`` table of a SQLite database.

    The engine is the caller's (``app.db.engine.make_engine``, WAL mode): ``aclose`` does not
    dispose of it."""

    def __init__(self, engine: AsyncEngine) -> None:
        if engine.dialect.name != "sqlite":
            raise ValueError(f"SqliteStore needs a SQLite engine, got {engine.dialect.name}")
        self._engine = engine

    async def write(self, rows: Sequence[Row]) -> int:
        """Insert ``rows``, skipping ones already stored; return how many were new.

        Raises ``StoreUnavailable`` when the batch could not be committed (then none of it is)."""
        if not rows:
            return 0
        records = convert_rows(rows, sqlite_record)
        try:
            async with self._engine.begin() as connection:
                result = await connection.exec_driver_sql(_INSERT, records)
        except DATABASE_ERRORS as exc:
            raise StoreUnavailable(
                f"SQLite at {mask_url(self._engine.url)}: {describe_error(exc)}") from exc
        return max(result.rowcount, 0)

    async def aclose(self) -> None:
        """Nothing to release: the engine belongs to the caller."""
