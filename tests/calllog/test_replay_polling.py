"""The writer's replay passes: an idle writer looks in the spools about once a second
(``REPLAY_IDLE_S``), not every flush cycle, and still stores what another gateway left there."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import redis.asyncio as aioredis

from app.calllog.file_spool import FileSpool
from app.calllog.query import get_call
from app.calllog.record import CallRecord
from app.calllog.redis_spool import RedisSpool
from app.calllog.sqlite import SqliteStore
from app.calllog.writer import REPLAY_IDLE_S, CallLogWriter
from app.db.engine import make_engine
from app.db.migrate import upgrade
from app.resources import RedisPools
from tests.calllog.servers import PrivateRedis


async def xreadgroup_calls(client: aioredis.Redis) -> int:
    """How many XREADGROUP commands this Redis has served (``INFO commandstats``)."""
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_xreadgroup", {}).get("calls", 0))


async def test_an_idle_writer_looks_in_the_spools_about_once_a_second(tmp_path: Path) -> None:
    """Over 2.5 s of 50-ms cycles (50 of them) an idle writer asks the Redis spool for rows a
    few times; a row another gateway spooled meanwhile is stored within REPLAY_IDLE_S."""
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    await upgrade(url)
    engine = make_engine(url)
    redis = PrivateRedis()
    redis.start()
    client = RedisPools.open(redis.url).calllog
    writer = CallLogWriter(store=SqliteStore(engine), file_spool=FileSpool(tmp_path / "spool"),
                           spool=RedisSpool(client, consumer="idle"), flush_interval_s=0.05)
    try:
        await writer.start()
        await asyncio.sleep(0.3)  # its first pass (the spools may hold an earlier run's rows)
        before = await xreadgroup_calls(client)
        await asyncio.sleep(2.5)
        polled = await xreadgroup_calls(client) - before
        assert 1 <= polled <= 2.5 / REPLAY_IDLE_S + 2  # every cycle: ~100
        other = RedisSpool(client, consumer="other-gateway")
        await other.put([CallRecord(id="left-by-another", endpoint="/v1/chat/completions",
                                    caller="master").to_row()])
        put_at = time.monotonic()
        while await get_call(engine, "left-by-another") is None:
            assert time.monotonic() - put_at < REPLAY_IDLE_S + 2, "not replayed in time"
            await asyncio.sleep(0.02)
    finally:
        await writer.aclose(timeout_s=2)
        await client.aclose()
        await engine.dispose()
        redis.stop()
