"""Building the call log for a running gateway: database, Redis, spools, journal, writer.

Start-up checks, each reported by the writer's ``conditions()`` (``/readyz``, metrics) and logged:

- the database: an embedded SQLite is migrated; a Postgres must be at this version's schema, and
  one that answers with another schema is refused (``SchemaNotReady``: the server does not
  start). One that cannot be reached (down, or no answer within ``CHECK_TIMEOUT_S``) is not a
  refusal: the gateway serves, spools call records, and checks again every second until the
  database answers migrated. Under ``switchboard serve``, which checks first, a database its
  check could not reach is not checked again here (``UNREACHABLE_AT_START``);
- the spool directory: the journal creates its first segment there (the OS's reason if not);
- Redis, when configured: one PING (a condition, never a refusal), and one every second while
  the writer finds it down (``CallLogWriter``'s ``ping_redis``).
"""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.calllog.condition import UP, Condition
from app.calllog.file_spool import FileSpool
from app.calllog.live import IDS_EVERY_S, LiveFeed
from app.calllog.postgres import PostgresStore
from app.calllog.redis_spool import RedisSpool
from app.calllog.seams import CallStore, StoreNotReady, StoreUnavailable
from app.calllog.sqlite import SqliteStore
from app.calllog.writer import CallLogWriter
from app.config import CallLog
from app.db.engine import is_sqlite, make_engine
from app.db.migrate import DatabaseUnreachable, SchemaNotReady, check_current, upgrade
from app.settings import Settings

CHECK_TIMEOUT_S = 5.0
"""How long the schema check waits for the database (a hung one never answers)."""
UNREACHABLE_AT_START = "_SWITCHBOARD_DATABASE_UNREACHABLE"
"""Set by ``switchboard serve`` (to ``switchboard serve could not check ...``) when its own
start-up check could not reach the database: its workers then start with the store unreachable
at once instead of waiting ``CHECK_TIMEOUT_S`` for a hung one again. The writer checks every
second after that, so a worker started with it set while the database answers finds it up
within a second."""


@dataclass(slots=True)
class CallLogRuntime:
    engine: AsyncEngine
    writer: CallLogWriter

    async def aclose(self) -> None:
        """Drain the writer (SIGTERM path), then release the database pool (Redis belongs to
        whoever passed it in). A Postgres the writer last found unusable (down, hung,
        unmigrated) is not asked to close the pool's connections: asyncpg would wait its
        command timeout (60 s) on each, and the shutdown with them. They are dropped instead
        (asyncpg aborts a connection it collects unclosed), and the process's exit closes
        their sockets."""
        await self.writer.aclose()
        answering = self.writer.conditions()["store"].up or is_sqlite(self.engine.url)
        await self.engine.dispose(close=answering)


async def check_store(url: str) -> None:
    """``check_current`` in the writer's terms: ``StoreNotReady`` for another schema,
    ``StoreUnavailable`` when the database cannot be reached."""
    try:
        await check_current(url, timeout_s=CHECK_TIMEOUT_S)
    except SchemaNotReady as exc:
        raise StoreNotReady(str(exc)) from exc
    except DatabaseUnreachable as exc:
        raise StoreUnavailable(str(exc)) from exc


async def open_call_log(settings: Settings, config: CallLog, *,
                        redis: aioredis.Redis | None = None,
                        strict: bool = False) -> CallLogRuntime:
    """Connect the store, use ``redis`` (the call log's pool of ``app.resources.RedisPools``)
    for the spool and feed when given, open the journal and start the writer (see the module
    docstring for what is checked). Raises ``SchemaNotReady`` for a Postgres at another
    schema."""
    url = settings.database_url
    condition = UP
    if is_sqlite(url):
        await upgrade(url)
    elif unreachable := os.environ.get(UNREACHABLE_AT_START):
        condition = Condition(up=False, reason="unreachable", detail=unreachable)
    else:
        try:
            await check_current(url, timeout_s=CHECK_TIMEOUT_S)
        except DatabaseUnreachable as exc:
            condition = Condition(up=False, reason="unreachable", detail=str(exc))
    engine = make_engine(url)
    store: CallStore = SqliteStore(engine) if is_sqlite(url) else PostgresStore(engine)
    client = redis
    consumer = f"{socket.gethostname()}-{os.getpid()}"
    writer = CallLogWriter(
        store=store,
        file_spool=FileSpool(settings.spool_dir),
        spool=RedisSpool(client, consumer=consumer, claim_idle_s=config.claim_idle_s,
                         forget_idle_s=config.forget_idle_s) if client else None,
        feed=LiveFeed(client, ids_every_s=IDS_EVERY_S) if client else None,
        check_store=None if condition.up else lambda: check_store(url),
        ping_redis=(lambda: _ping(client)) if client else None,
        store_condition=condition,
        buffer_max=config.buffer_max, batch_max=config.batch_max,
        flush_interval_s=config.flush_interval_s, journal_dir=settings.spool_dir,
        fsync_interval_s=config.fsync_interval_s, strict=strict,
    )
    if client is not None:
        writer.redis_condition(await _ping(client))
    await writer.start()
    return CallLogRuntime(engine=engine, writer=writer)


async def _ping(client: aioredis.Redis) -> str | None:
    """``None`` when Redis answers a PING, else why not."""
    try:
        await asyncio.wait_for(client.ping(), 2.0)
    except (RedisError, OSError, TimeoutError) as exc:
        return f"redis: {str(exc) or type(exc).__name__}"  # a timeout says nothing
    return None
