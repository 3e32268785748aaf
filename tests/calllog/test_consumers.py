"""The Redis spool forgets the consumers of dead processes: idle ones with no pending entry go,
ones with pending entries stay until their entries are claimed, and no entry is ever lost. First
the spool on its own, then real ``switchboard serve`` processes restarted on one (private)
Redis."""

from __future__ import annotations

import signal
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from app.calllog.record import CallRecord, Row
from app.calllog.redis_spool import RedisSpool, text
from tests.calllog.freeze_proxy import FreezeProxy
from tests.calllog.servers import PrivatePostgres, PrivateRedis, serve_process
from tests.calllog.test_sick_database import calls, gateway_env, new_database, stored, until
from tests.servers import free_port

GROUP = "writers"


def make_rows(prefix: str, count: int) -> list[Row]:
    return [CallRecord(id=f"{prefix}-{i}", endpoint="/v1/chat/completions",
                       caller="master").to_row() for i in range(count)]


@pytest.fixture
async def stream(client: aioredis.Redis) -> AsyncIterator[str]:
    name = f"test:h3:consumers:{uuid.uuid4().hex}"
    yield name
    await client.delete(name)


def spool(client: aioredis.Redis, stream: str, consumer: str, *, forget_idle_s: float = 0.0,
          claim_idle_s: float = 30.0, forget_every_s: float = 60.0) -> RedisSpool:
    return RedisSpool(client, stream=stream, group=GROUP, consumer=consumer,
                      claim_idle_s=claim_idle_s, forget_idle_s=forget_idle_s,
                      forget_every_s=forget_every_s)


async def consumers(client: aioredis.Redis, stream: str) -> dict[str, int]:
    """Consumer name -> pending entries."""
    return {text(c["name"]): int(c["pending"])
            for c in await client.xinfo_consumers(stream, GROUP)}


async def die_holding(client: aioredis.Redis, stream: str, consumer: str, rows: int) -> None:
    """A process that put ``rows`` rows, took them, and died before acknowledging them."""
    dead = spool(client, stream, consumer, forget_idle_s=3600)
    await dead.put(make_rows(consumer, rows))
    assert len(await dead.take(rows)) == rows


async def test_restarts_leave_one_consumer(client: aioredis.Redis, stream: str) -> None:
    """Processes that came and went (each its own host-pid consumer, everything acknowledged)
    are forgotten by the next one to take: one consumer remains, itself."""
    for pid in range(5):
        old = spool(client, stream, f"host-{pid}", forget_idle_s=3600)
        await old.put(make_rows(f"p{pid}", 2))
        taken = await old.take(10)
        await old.ack([token for token, _ in taken])
    assert len(await consumers(client, stream)) == 5
    new = spool(client, stream, "host-99")
    assert await new.take(10) == []
    assert await consumers(client, stream) == {"host-99": 0}


@pytest.mark.parametrize("pending", [1, 7])
async def test_consumer_with_pending_entries_stays_until_claimed(
        client: aioredis.Redis, stream: str, pending: int) -> None:
    """A dead consumer holding entries is kept, however idle, with its entries; once another
    consumer has claimed them, it is forgotten, and every row was delivered."""
    await die_holding(client, stream, "host-dead", pending)
    survivor = spool(client, stream, "host-live", claim_idle_s=3600)
    assert await survivor.take(100) == []
    assert await consumers(client, stream) == {"host-dead": pending, "host-live": 0}
    # Claimed once idle past claim_idle_s (0 here), then forgotten at the next clean-up.
    claimer = spool(client, stream, "host-live", claim_idle_s=0)
    taken = await claimer.take(100)
    assert sorted(row["id"] for _, row in taken) == [f"host-dead-{i}" for i in range(pending)]
    assert await claimer.forget_idle_consumers() == ["host-dead"]
    assert await consumers(client, stream) == {"host-live": pending}
    await claimer.ack([token for token, _ in taken])
    assert await claimer.pending_count() == 0


async def test_recently_active_consumers_stay(client: aioredis.Redis, stream: str) -> None:
    """A consumer idle for less than forget_idle_s is kept, pending entries or not."""
    other = spool(client, stream, "host-other", forget_idle_s=3600)
    await other.take(1)
    me = spool(client, stream, "host-me", forget_idle_s=3600)
    await me.take(1)
    assert await me.forget_idle_consumers() == []
    assert set(await consumers(client, stream)) == {"host-other", "host-me"}


async def test_never_forgets_itself(client: aioredis.Redis, stream: str) -> None:
    """The consumer doing the clean-up never deletes itself, even idle and empty."""
    me = spool(client, stream, "host-me")
    await me.take(1)
    assert await me.forget_idle_consumers() == []
    assert await consumers(client, stream) == {"host-me": 0}


async def test_clean_up_runs_at_start_then_every_interval(client: aioredis.Redis,
                                                           stream: str) -> None:
    """take cleans up at its first call, then not again before forget_every_s; a consumer that
    appears in between waits for the next clean-up."""
    me = spool(client, stream, "host-me", forget_every_s=3600)
    await spool(client, stream, "host-a", forget_idle_s=3600).take(1)
    await me.take(1)
    assert set(await consumers(client, stream)) == {"host-me"}
    await spool(client, stream, "host-b", forget_idle_s=3600).take(1)
    await me.take(1)
    assert set(await consumers(client, stream)) == {"host-me", "host-b"}
    assert await me.forget_idle_consumers() == ["host-b"]


async def test_a_live_consumer_forgotten_loses_nothing(client: aioredis.Redis,
                                                       stream: str) -> None:
    """A live consumer forgotten while idle (a database outage: it puts, never takes) reads
    again as if new: every row it put comes back to it."""
    live = spool(client, stream, "host-live", forget_idle_s=3600)
    await live.take(1)
    await live.put(make_rows("during-outage", 4))
    other = spool(client, stream, "host-other")
    taken_by_other = await other.take(2)  # takes two rows, forgets the idle, empty host-live
    assert "host-live" not in await consumers(client, stream)
    taken = await live.take(10)
    assert len(taken_by_other) + len(taken) == 4
    await other.ack([t for t, _ in taken_by_other])
    await live.ack([t for t, _ in taken])
    assert await live.pending_count() == 0


# ---- through running gateways ----------------------------------------------------------------
# ``postgres`` (private, module-scoped) and ``redis_server`` (private, per test) come from
# tests/calllog/conftest.py, so the group inspected here is these gateways' alone.

SPOOL_STREAM, SPOOL_GROUP = "switchboard:spool", "writers"  # what `switchboard serve` uses
FORGET = "forget_idle_s: 0.2"  # a dead process's consumer is idle for longer than this


def consumer_of(proc: subprocess.Popen[bytes]) -> str:
    """The consumer name a gateway process reads the spool as (``host-pid``)."""
    return f"{socket.gethostname()}-{proc.pid}"


def group(redis_url: str) -> dict[str, int]:
    """The spool group's consumers -> their pending entries ({} before the group exists)."""
    with redis.Redis.from_url(redis_url) as client:
        try:
            return {text(c["name"]): int(c["pending"])
                    for c in client.xinfo_consumers(SPOOL_STREAM, SPOOL_GROUP)}
        except ResponseError:  # no such key or group yet
            return {}


def wait_for_consumer(redis_url: str, name: str) -> dict[str, int]:
    """The group once consumer ``name`` is in it (a gateway's first read of the spool, which
    follows its first clean-up)."""
    until(lambda: name in group(redis_url))
    return group(redis_url)


@contextmanager
def gateway_process(env: dict[str, str], log: Path) -> Iterator[
        tuple[str, subprocess.Popen[bytes]]]:
    """A `switchboard serve` on a port of its own (base URL, process); terminated on exit
    unless the test ended it already."""
    port = free_port()
    proc = serve_process(env, port, log=log)
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


def end(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    proc.send_signal(sig)
    proc.wait(timeout=30)


def test_restarted_gateways_leave_one_consumer(
        postgres: PrivatePostgres, redis_server: PrivateRedis, simulator: str,
        tmp_path: Path) -> None:
    """`switchboard serve` started five times on one Redis, each ended by SIGTERM or SIGKILL in
    turn: once a new gateway reads the spool, its consumer is the group's only one (the dead
    ones, with no pending entry, are gone), and every call's row is stored."""
    url = new_database(postgres, "consumer_restarts", migrated=True)
    env = gateway_env(tmp_path, simulator, url, redis_server.url, calllog=FORGET)
    ids: set[str] = set()
    for run, sig in enumerate([signal.SIGTERM, signal.SIGKILL, signal.SIGTERM, signal.SIGKILL,
                               None]):
        with gateway_process(env, tmp_path / "serve.log") as (base, proc):
            me = consumer_of(proc)
            assert wait_for_consumer(redis_server.url, me) == {me: 0}, f"run {run}"
            ids |= calls(base, f"restart-{run}", 3)
            if sig is not None:
                end(proc, sig)
    assert sorted(stored(url, ids)) == sorted(ids)


def test_a_dead_gateways_consumer_stays_until_its_rows_are_claimed(
        postgres: PrivatePostgres, redis_server: PrivateRedis, simulator: str,
        tmp_path: Path) -> None:
    """A gateway killed (SIGKILL) while it held spooled rows it had taken (Postgres hung): the
    next gateway keeps the dead consumer while it holds them, claims and stores them; the one
    after forgets it. Every row is stored, once."""
    url = new_database(postgres, "consumer_pending", migrated=True)
    proxy = FreezeProxy(postgres.port)
    env = gateway_env(tmp_path, simulator, proxy.url(url), redis_server.url, calllog=FORGET)
    log = tmp_path / "serve.log"
    try:
        with gateway_process(env, log) as (base, first):
            dead = consumer_of(first)
            ids = calls(base, "pending-warm", 3)
            assert sorted(stored(url, ids)) == sorted(ids)
            proxy.freeze()
            ids |= calls(base, "pending-hung", 6)
            # Spooled to Redis after a store timeout, then taken for a replay that hangs too.
            until(lambda: group(redis_server.url).get(dead, 0) > 0, timeout_s=60)
            end(first, signal.SIGKILL)
        proxy.drop()
        proxy.thaw()
        with gateway_process(env, log) as (base, second):
            # It had pending rows at the new gateway's clean-up: kept.
            assert dead in wait_for_consumer(redis_server.url, consumer_of(second))
            found = stored(url, ids)
            assert group(redis_server.url).get(dead) == 0  # claimed; forgotten at the next one
            end(second, signal.SIGTERM)
        with gateway_process(env, log) as (base, third):
            me = consumer_of(third)
            assert wait_for_consumer(redis_server.url, me) == {me: 0}
    finally:
        proxy.close()
    assert sorted(found) == sorted(ids)
