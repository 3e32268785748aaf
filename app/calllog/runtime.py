"""Building the call log for a running gateway: database, Redis, spools, writer."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy.ext.asyncio import AsyncEngine

from app.calllog.file_spool import FileSpool
from app.calllog.live import LiveFeed
from app.calllog.postgres import PostgresStore
from app.calllog.redis_spool import RedisSpool
from app.calllog.seams import CallStore
from app.calllog.sqlite import SqliteStore
from app.calllog.writer import CallLogWriter
from app.config import CallLog
from app.db.engine import is_sqlite, make_engine
from app.db.migrate import check_current, upgrade
from app.settings import Settings


@dataclass(slots=True)
class CallLogRuntime:
    engine: AsyncEngine
    redis: aioredis.Redis | None
    writer: CallLogWriter

    async def aclose(self) -> None:
        """Drain the writer (SIGTERM path), then release Redis and the database pool."""
        await self.writer.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()


def redis_client(url: str) -> aioredis.Redis:
    """A client that fails fast when Redis is down (the writer falls back; it must not stall)."""
    return aioredis.from_url(url, socket_connect_timeout=1.0, socket_timeout=5.0,
                             retry=Retry(NoBackoff(), 0), health_check_interval=15)


async def open_call_log(settings: Settings, config: CallLog, *,
                        strict: bool = False) -> CallLogRuntime:
    """Connect the store (migrating an embedded SQLite; refusing an unmigrated Postgres with
    ``SchemaNotReady``), the Redis spool and feed when configured, and start the writer."""
    url = settings.database_url
    if is_sqlite(url):
        await upgrade(url)
    else:
        await check_current(url)
    engine = make_engine(url)
    store: CallStore = SqliteStore(engine) if is_sqlite(url) else PostgresStore(engine)
    client = redis_client(settings.redis_url) if settings.redis_url else None
    consumer = f"{socket.gethostname()}-{os.getpid()}"
    writer = CallLogWriter(
        store=store,
        file_spool=FileSpool(settings.spool_dir),
        spool=RedisSpool(client, consumer=consumer, claim_idle_s=config.claim_idle_s)
        if client else None,
        feed=LiveFeed(client) if client else None,
        buffer_max=config.buffer_max, batch_max=config.batch_max,
        flush_interval_s=config.flush_interval_s, strict=strict,
    )
    await writer.start()
    return CallLogRuntime(engine=engine, redis=client, writer=writer)
