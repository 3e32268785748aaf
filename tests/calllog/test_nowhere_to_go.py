"""Rows nothing can take (the database down, no Redis, a spool directory that cannot be
written: a full or read-only volume) stay in the writer's memory, up to ``buffer_max``, and are
stored once the database is back: they were counted dropped at the first batch that failed,
while the process lived on and had room for them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from app.calllog.file_spool import FileSpool
from app.calllog.postgres import PostgresStore
from app.calllog.record import CallRecord
from app.calllog.writer import CallLogWriter
from app.db.engine import make_engine
from tests.calllog.servers import PrivatePostgres
from tests.calllog.test_sick_database import new_database, stopped, stored

CALLS = 12


def _record(i: int) -> CallRecord:
    return CallRecord(id=f"kept-{i:03d}", request_id=f"kept-{i:03d}",
                      endpoint="/v1/chat/completions", caller="master", public_model="chat")


def test_rows_nothing_takes_stay_in_memory_until_the_store_is_back(
        postgres: PrivatePostgres, tmp_path: Path) -> None:
    url = new_database(postgres, "nowhere_to_go", migrated=True)
    (tmp_path / "a-file").write_text("not a directory")
    unwritable = tmp_path / "a-file" / "spool"  # every spool or journal write: ENOTDIR

    async def scenario() -> tuple[int, int, int]:
        engine = make_engine(url)
        writer = CallLogWriter(store=PostgresStore(engine), file_spool=FileSpool(unwritable),
                               journal_dir=unwritable, batch_max=5, retry_s=0.0,
                               flush_interval_s=3600)
        try:
            with stopped(postgres):
                for i in range(CALLS):
                    writer.submit(_record(i))
                for _ in range(3):  # each pass fails to place the oldest batch, and stops
                    await writer.flush_once()
                assert writer.stats.store_failures >= 1 and writer.stats.spool_failures >= 1
                during = (writer.stats.dropped, writer.buffered)
            deadline = time.monotonic() + 60
            while writer.stats.stored < CALLS:  # Postgres is back
                assert time.monotonic() < deadline, writer.stats
                await writer.flush_once()
                await asyncio.sleep(0.05)
            return *during, writer.stats.dropped
        finally:
            await writer.aclose(timeout_s=5)
            await engine.dispose()

    dropped_during, buffered_during, dropped_after = asyncio.run(scenario())
    assert (dropped_during, buffered_during) == (0, CALLS)
    assert dropped_after == 0
    found = stored(url, {f"kept-{i:03d}" for i in range(CALLS)}, timeout_s=0)
    assert sorted(found) == [f"kept-{i:03d}" for i in range(CALLS)]
