"""Rows nothing can take (the database down, no Redis, a spool directory that cannot be
written: a full or read-only volume) stay in the writer's memory, up to ``buffer_max``, and are
stored once the database is back: they were counted dropped at the first batch that failed,
while the process lived on and had room for them."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import redis.asyncio as aioredis

from app.calllog.file_spool import FileSpool
from app.calllog.live import LiveFeed
from app.calllog.postgres import PostgresStore
from app.calllog.record import CallRecord
from app.calllog.writer import CallLogWriter
from app.db.engine import make_engine
from tests.calllog.servers import PrivatePostgres
from tests.calllog.test_sick_database import new_database, stopped, stored
from tests.servers import free_port

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


async def test_rows_put_back_reach_the_live_feed_once(tmp_path: Path) -> None:
    """A batch put back in the buffer went to the live feed already: tried again, it is not
    published again (each retry added its calls to the feed's stream and day counters)."""
    (tmp_path / "a-file").write_text("not a directory")
    unwritable = tmp_path / "a-file" / "spool"
    name = f"sbtest-{uuid.uuid4().hex[:10]}"
    client = aioredis.Redis(host="127.0.0.1", port=6379)
    engine = make_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/none")
    writer = CallLogWriter(store=PostgresStore(engine), file_spool=FileSpool(unwritable),
                           feed=LiveFeed(client, stream=f"{name}:calls", prefix=name),
                           batch_max=5, retry_s=0.0, flush_interval_s=3600)
    try:
        for i in range(3):
            writer.submit(_record(i))
        for _ in range(4):
            await writer.flush_once()
        assert (writer.buffered, writer.stats.dropped) == (3, 0)
        assert await client.xlen(f"{name}:calls") == 3
    finally:
        await writer.aclose(timeout_s=2)
        await engine.dispose()
        keys = [k async for k in client.scan_iter(match=f"{name}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
