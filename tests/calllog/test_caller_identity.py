"""Caller identity in the call log: the virtual key's id and its team on the record, in every
store and spool, in the per-day Redis counters and as filters of the read side."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from app import errors
from app.calllog import query
from app.calllog.file_spool import FileSpool
from app.calllog.live import IDS_EVERY_S, CounterKind, LiveFeed
from app.calllog.postgres import PostgresStore
from app.calllog.record import (
    ID_CAP,
    TRUNCATED,
    CallRecord,
    Row,
    Status,
    dump_row,
    stub_row,
)
from app.calllog.redis_spool import RedisSpool
from app.calllog.seams import CallStore
from app.calllog.sqlite import SqliteStore
from app.calllog.writer import CallLogWriter
from app.db.engine import make_engine
from app.db.migrate import upgrade
from app.db.models import Call
from app.usage import Usage

DAY = date(2024, 3, 9)
DAY_TS = datetime(2024, 3, 9, 12, tzinfo=UTC).timestamp()


def row(call_id: str, *, key_id: str | None = None, team_id: str | None = None,
        cost: float = 0.5, status: Status = "ok", created_at: float = DAY_TS) -> Row:
    """A call's row as the gateway makes it; ``caller`` is ``key`` when a key id is given."""
    record = CallRecord(id=call_id, endpoint="/v1/chat/completions",
                        caller="key" if key_id else "master", key_id=key_id, team_id=team_id,
                        public_model="chat", created_at=created_at, status=status)
    record.usage = Usage(prompt_tokens=10, completion_tokens=4)
    record.cost_usd = cost
    return record.to_row()


@pytest.fixture
async def migrated(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on a migrated, empty call log (SQLite, or the module's Postgres database)."""
    await upgrade(database_url)
    engine = make_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(delete(Call))
    yield engine
    await engine.dispose()


def store_for(engine: AsyncEngine) -> CallStore:
    return PostgresStore(engine) if engine.dialect.name == "postgresql" else SqliteStore(engine)


def test_row_carries_key_and_team() -> None:
    """to_row emits key_id and team_id (None unless set), right after caller."""
    keyed = row("a", key_id="key_01", team_id="team_search")
    plain = row("b")
    assert (keyed["caller"], keyed["key_id"], keyed["team_id"]) == ("key", "key_01",
                                                                   "team_search")
    assert plain["key_id"] is None and plain["team_id"] is None
    columns = list(keyed)
    assert columns[columns.index("caller") + 1:columns.index("caller") + 3] == ["key_id",
                                                                              "team_id"]


def test_stub_keeps_key_and_team() -> None:
    """A row no sink could take keeps its key and team ids (cut to their columns), so spend per
    key still sees it."""
    bad = row("c", key_id="key_02", team_id="team_x")
    bad["tags"] = {"x": object()}
    stub = stub_row(bad)
    assert stub["key_id"] == "key_02" and stub["team_id"] == "team_x"
    long = stub_row({"id": "d", "key_id": "k" * 100, "team_id": None})
    assert long["key_id"] == "k" * (ID_CAP - len(TRUNCATED)) + TRUNCATED
    assert len(long["key_id"]) == ID_CAP and long["team_id"] is None
    assert b'"key_id":"key_02"' in dump_row(bad)


async def test_stores_keep_ids_and_filters_find_them(migrated: AsyncEngine) -> None:
    """Both stores write key_id and team_id; list_calls filters on each, alone or together."""
    await store_for(migrated).write([
        row("k1", key_id="key_a", team_id="team_1"), row("k2", key_id="key_b", team_id="team_1"),
        row("k3", key_id="key_c"), row("m1")])

    async def ids(**filters: str) -> list[str]:
        found, _ = await query.list_calls(migrated, **filters)  # type: ignore[arg-type]
        return sorted(r["id"] for r in found)

    assert await ids(key_id="key_a") == ["k1"]
    assert await ids(team_id="team_1") == ["k1", "k2"]
    assert await ids(team_id="team_1", key_id="key_b") == ["k2"]
    assert await ids(key_id="key_zzz") == []
    stored = await query.get_call(migrated, "k3")
    assert stored is not None and (stored["key_id"], stored["team_id"]) == ("key_c", None)


@pytest.mark.parametrize(("param", "value"), [
    ("key_id", "k" * 65), ("team_id", "t" * 65), ("key_id", "a\x00b"), ("team_id", "\ud800"),
])
async def test_bad_id_filters_are_invalid(migrated: AsyncEngine, param: str, value: str) -> None:
    """An id filter no row can match (too long for its column, NUL, lone surrogate) is an
    InvalidRequest naming the filter, before any query."""
    with pytest.raises(errors.InvalidRequest) as caught:
        await query.list_calls(migrated, **{param: value})  # type: ignore[arg-type]
    assert caught.value.param == param


@pytest.fixture
async def feed(client: aioredis.Redis) -> AsyncIterator[LiveFeed]:
    prefix = f"test:identity:{uuid.uuid4().hex}"
    yield LiveFeed(client, stream=f"{prefix}:calls", prefix=prefix)
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)


async def test_day_counters_by_key_and_team(client: aioredis.Redis, feed: LiveFeed) -> None:
    """Each row adds to its key's and its team's day counters; rows without a key or team add
    to neither (no ``key:None`` hash)."""
    await feed.publish([
        row("1", key_id="key_a", team_id="team_1", cost=1.0),
        row("2", key_id="key_a", team_id="team_1", cost=2.0, status="error"),
        row("3", key_id="key_b", team_id="team_1", cost=4.0),
        row("4", key_id="key_c", cost=8.0), row("5", cost=16.0)])
    key_a = await feed.today("key", "key_a", day=DAY)
    assert key_a == {"requests": 2, "prompt_tokens": 20, "completion_tokens": 8, "errors": 1,
                     "cost_usd": 3.0}
    team = await feed.today("team", "team_1", day=DAY)
    assert (team["requests"], team["cost_usd"], team["errors"]) == (3, 7.0, 1)
    assert (await feed.today("key", "key_c", day=DAY))["cost_usd"] == 8.0
    assert (await feed.today("caller", "master", day=DAY))["cost_usd"] == 16.0
    keys = sorted([k.decode() async for k in client.scan_iter(match=feed.counter_key(
        "key", "*", day=DAY))] + [k.decode() async for k in client.scan_iter(
            match=feed.counter_key("team", "*", day=DAY))])
    expected: list[tuple[CounterKind, str]] = [
        ("key", "key_a"), ("key", "key_b"), ("key", "key_c"), ("team", "team_1")]
    assert keys == sorted(feed.counter_key(kind, name, day=DAY) for kind, name in expected)


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def held(client: aioredis.Redis) -> AsyncIterator[tuple[LiveFeed, Clock]]:
    """A feed that holds key and team counters for 5 s, on a clock the test moves."""
    prefix = f"test:identity-held:{uuid.uuid4().hex}"
    clock = Clock()
    yield LiveFeed(client, stream=f"{prefix}:calls", prefix=prefix, ids_every_s=5.0,
                   clock=clock), clock
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)


async def test_held_key_and_team_counters_are_added_when_due(
        held: tuple[LiveFeed, Clock]) -> None:
    """With ids_every_s, the model and caller counters count each batch at once; a key's and
    a team's sums wait in the process until their first row is ids_every_s old, then go with
    the next publish (a batch, or none), summed over every batch meanwhile."""
    feed, clock = held
    assert await feed.publish([row("1", key_id="key_a", team_id="team_1", cost=1.0)])
    clock.now += 4.9
    assert await feed.publish([row("2", key_id="key_a", team_id="team_1", cost=2.0),
                               row("3", key_id="key_b", cost=4.0)])
    assert (await feed.today("caller", "key", day=DAY))["requests"] == 3
    assert (await feed.today("key", "key_a", day=DAY))["requests"] == 0
    assert feed.holding and not await feed.publish([])  # nothing due yet: nothing sent
    clock.now += 0.1
    assert await feed.publish([])
    key_a = await feed.today("key", "key_a", day=DAY)
    assert (key_a["requests"], key_a["cost_usd"], key_a["prompt_tokens"]) == (2, 3.0, 20)
    assert (await feed.today("team", "team_1", day=DAY))["cost_usd"] == 3.0
    assert (await feed.today("key", "key_b", day=DAY))["requests"] == 0  # first seen at 4.9 s
    assert feed.holding
    clock.now += 4.9
    assert await feed.publish([])
    assert (await feed.today("key", "key_b", day=DAY))["cost_usd"] == 4.0
    assert not feed.holding and not await feed.publish([])


async def test_held_sums_of_a_teams_keys_add_up_in_its_counter(
        held: tuple[LiveFeed, Clock]) -> None:
    """The held sums are kept per day, key and team; when due, each adds to its key's counter
    and to its team's, so a team's counter counts every row of all its keys (and a row of a
    team without a key), each day's rows in that day's counters."""
    feed, clock = held
    next_day = DAY_TS + 86400
    assert await feed.publish([
        row("1", key_id="key_a", team_id="team_1", cost=1.0),
        row("2", key_id="key_b", team_id="team_1", cost=2.0, status="error"),
        row("3", key_id="key_a", team_id="team_1", cost=4.0),
        row("4", team_id="team_1", cost=8.0),
        row("5", key_id="key_a", team_id="team_1", cost=16.0, created_at=next_day)])
    assert (await feed.today("team", "team_1", day=DAY))["requests"] == 0
    clock.now += 5
    assert await feed.publish([])
    assert not feed.holding
    assert await feed.today("team", "team_1", day=DAY) == {
        "requests": 4, "prompt_tokens": 40, "completion_tokens": 16, "errors": 1,
        "cost_usd": 15.0}
    assert (await feed.today("key", "key_a", day=DAY))["cost_usd"] == 5.0
    assert (await feed.today("key", "key_b", day=DAY))["errors"] == 1
    later = datetime.fromtimestamp(next_day, UTC).date()
    assert (await feed.today("team", "team_1", day=later))["cost_usd"] == 16.0
    assert (await feed.today("key", "key_a", day=later))["requests"] == 1


async def test_everything_adds_every_held_counter(held: tuple[LiveFeed, Clock]) -> None:
    """publish(everything=True) (the writer's last publish when it closes) adds every held
    counter however young; a slice of at most 256 due ones goes with an ordinary publish."""
    feed, clock = held
    await feed.publish([row(str(n), key_id=f"key_{n}") for n in range(300)])
    clock.now += 5
    assert await feed.publish([])
    assert feed.holding  # 256 went, 44 wait for the next publish
    added = [(await feed.today("key", f"key_{n}", day=DAY))["requests"] for n in range(300)]
    assert added == [1] * 256 + [0] * 44
    await feed.publish([row("young", key_id="key_young")], everything=True)
    assert not feed.holding
    assert (await feed.today("key", "key_299", day=DAY))["requests"] == 1
    assert (await feed.today("key", "key_young", day=DAY))["requests"] == 1


async def test_closing_writer_adds_the_held_counters(client: aioredis.Redis,
                                                     tmp_path: Path) -> None:
    """The gateway's writer holds key counters for IDS_EVERY_S; closing it (SIGTERM) adds
    them before it returns, so a drained gateway leaves none behind."""
    prefix = f"test:identity-close:{uuid.uuid4().hex}"
    url = f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}"
    await upgrade(url)
    engine = make_engine(url)
    feed = LiveFeed(client, stream=f"{prefix}:calls", prefix=prefix, ids_every_s=IDS_EVERY_S)
    writer = CallLogWriter(store=SqliteStore(engine), file_spool=FileSpool(tmp_path / "spool"),
                           feed=feed, flush_interval_s=0.01)
    today = datetime.now(UTC)
    try:
        await writer.start()
        record = CallRecord(id="c1", endpoint="/v1/chat/completions", caller="key",
                            key_id="key_a", team_id="team_1", public_model="chat",
                            created_at=today.timestamp())
        record.cost_usd = 0.25
        writer.submit(record)
        deadline = time.monotonic() + 5
        while (await feed.today("caller", "key"))["requests"] == 0:
            assert time.monotonic() < deadline, "the batch was not published"
            await asyncio.sleep(0.01)
        assert feed.holding and (await feed.today("key", "key_a"))["requests"] == 0
        await writer.aclose(timeout_s=5)
        assert (await feed.today("key", "key_a"))["cost_usd"] == 0.25
        assert (await feed.today("team", "team_1"))["requests"] == 1
    finally:
        await engine.dispose()
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)


async def test_redis_spool_carries_ids(client: aioredis.Redis) -> None:
    """A row parked in the Redis spool comes back with its key and team ids."""
    stream = f"test:identity-spool:{uuid.uuid4().hex}"
    spool = RedisSpool(client, stream=stream, consumer="w1", claim_idle_s=30.0)
    try:
        await spool.put([row("s1", key_id="key_a", team_id="team_1")])
        [(_, back)] = await spool.take(10)
    finally:
        await client.delete(stream)
    assert (back["key_id"], back["team_id"]) == ("key_a", "team_1")
