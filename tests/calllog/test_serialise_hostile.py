"""Hostile call rows (bodies nested hundreds of levels deep, lone surrogates, integers past 64
bits, objects JSON has no word for) never fail a sink, and never take their batch with them:
``to_row``, the redactor, the file and Redis spools, the live feed, both stores, the admin API,
and a running gateway with body capture on."""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr, TypeAdapter
from sqlalchemy.ext.asyncio import AsyncEngine

from app.calllog.file_spool import FileSpool
from app.calllog.live import LiveFeed
from app.calllog.postgres import PostgresStore
from app.calllog.query import get_call, list_calls
from app.calllog.record import (
    MAX_BODY_DEPTH,
    TOO_DEEP,
    CallRecord,
    Row,
    dump_row,
    json_safe,
    stub_row,
)
from app.calllog.redact import REDACTED, Redactor
from app.calllog.redis_spool import RedisSpool
from app.calllog.seams import CallStore
from app.calllog.sqlite import SqliteStore
from app.config import parse_config
from app.db.engine import make_engine
from app.db.migrate import upgrade
from app.main import create_app
from app.settings import Settings
from tests.api.conftest import MASTER_KEY, sim_config
from tests.calllog.servers import PrivatePostgres, PrivateRedis, writer_of
from tests.db.conftest import admin_sql
from tests.servers import serve

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}


def nested(levels: int, leaf: Any = "leaf") -> Any:
    """A value ``levels`` containers deep, objects and arrays in turn (the outer one level 1)."""
    value = leaf
    for i in range(levels):
        value = {"k": value} if i % 2 else [value]
    return value


def depth(value: Any) -> int:
    """How many containers deep ``value`` nests (iterative: no recursion limit to hit)."""
    deepest, level = 0, [(value, 1)]
    while level:
        item, d = level.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, d)
            level.extend((child, d + 1)
                         for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def leaves(value: Any) -> list[Any]:
    out, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:
            out.append(item)
    return out


class Opaque:
    """An object JSON has no word for, whose ``str()`` fails too."""

    def __str__(self) -> str:
        raise RuntimeError("no text")


def record(call_id: str, **fields: Any) -> CallRecord:
    return CallRecord(id=call_id, endpoint="/v1/chat/completions", caller="master",
                      public_model="chat", **fields)


def hostile_rows(prefix: str) -> list[Row]:
    """A batch: plain rows around rows that break orjson one way each. The odd values are put
    into the row directly, as a row replayed from an older build or built elsewhere could hold
    them; ``to_row`` would not make them."""
    plain = record(f"{prefix}-plain-0").to_row()
    deep = record(f"{prefix}-deep").to_row()
    deep["request_body"] = {"model": "chat", "extra": nested(600)}
    surrogate = record(f"{prefix}-surrogate", error_message="bad \ud800 text").to_row()
    surrogate["response_body"] = {"\udfff": ["\ud83d"]}
    odd = record(f"{prefix}-odd").to_row()
    odd["request_body"] = {"big": 2**70, "set": {1, 2}, 3: "int key", "obj": Opaque()}
    odd["tags"] = {"team": Opaque()}
    last = record(f"{prefix}-plain-1").to_row()
    return [plain, deep, surrogate, odd, last]


def check_round_trip(rows: list[Row], back: list[Row]) -> None:
    """Every row came back, by id and in order, with what could be kept kept."""
    assert [r["id"] for r in back] == [r["id"] for r in rows]
    by_id = {r["id"]: r for r in back}
    prefix = rows[0]["id"].rsplit("-plain-0", 1)[0]
    assert depth(by_id[f"{prefix}-deep"]["request_body"]) == MAX_BODY_DEPTH
    assert TOO_DEEP in leaves(by_id[f"{prefix}-deep"]["request_body"])
    assert by_id[f"{prefix}-surrogate"]["error_message"].startswith("bad ")
    odd = by_id[f"{prefix}-odd"]["request_body"]
    assert odd["big"] == str(2**70) and odd["3"] == "int key" and odd["obj"] == "<Opaque>"
    assert by_id[f"{prefix}-plain-1"] == rows[-1]


# ---- the row itself --------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [150, 300, 1_000, 20_000])
def test_to_row_caps_body_depth(levels: int) -> None:
    """A captured body of any depth is kept down to MAX_BODY_DEPTH levels, the rest marked."""
    rec = record("deep", request_body={"extra": nested(levels)},
                 response_body={"choices": nested(levels)})
    row = rec.to_row()
    for key in ("request_body", "response_body"):
        assert depth(row[key]) == min(levels + 1, MAX_BODY_DEPTH)
        assert (TOO_DEEP in leaves(row[key])) == (levels + 1 > MAX_BODY_DEPTH)
    assert orjson.loads(orjson.dumps(row))["id"] == "deep"
    assert orjson.loads(orjson.dumps([row]))[0]["id"] == "deep"  # the live feed's list


@pytest.mark.parametrize("levels", [500, 1_000, 50_000])
def test_redactor_survives_any_depth(levels: int) -> None:
    """The redactor stops at MAX_BODY_DEPTH levels instead of recursing into RecursionError,
    and still redacts what it keeps."""
    redactor = Redactor(keys=["api_key"], patterns=[r"sk-[a-z0-9]+"])
    out = redactor.redact({"api_key": "x", "note": "key sk-abc123", "extra": nested(levels)})
    assert out["api_key"] == REDACTED and out["note"] == f"key {REDACTED}"
    assert depth(out) == MAX_BODY_DEPTH
    assert TOO_DEEP in leaves(out)


def test_redactor_keeps_bodies_within_the_cap_whole() -> None:
    """A body up to the cap is copied whole (nothing marked)."""
    body = {"extra": nested(MAX_BODY_DEPTH - 1)}
    assert Redactor(keys=[], patterns=[]).redact(body) == body


@pytest.mark.parametrize("value", [
    {"a": float("nan"), "b": float("inf")}, ("tuple", 1), {1.5: "float key"}, {None: 1},
    {"bytes": b"\x00\xff"}, [2**64, -(2**63) - 1, 2**64 - 1], {"set": frozenset()},
])
def test_json_safe_values_always_serialise(value: Any) -> None:
    """json_safe turns odd values into ones orjson writes (keys to strings, big integers to
    strings, unknown objects to their str())."""
    assert isinstance(orjson.dumps(json_safe(value)), bytes)


def test_dump_row_never_raises() -> None:
    """dump_row writes every hostile row, each as valid JSON keeping its id."""
    for row in hostile_rows("dump"):
        assert orjson.loads(dump_row(row))["id"] == row["id"]


def test_stub_row_of_garbage() -> None:
    """Even a row whose every value is wrong leaves a stub with its id and the reason."""
    row: Row = {"id": "x" * 1000, "created_at": float("nan"), "caller": Opaque(),
                "http_status": "500"}
    stub = stub_row(row)
    assert len(stub["id"]) == 128 and stub["created_at"] == 0.0
    assert stub["caller"] == "<Opaque>" and stub["http_status"] == 0
    assert orjson.loads(orjson.dumps(stub))["error_type"] == "unstorable_record"


# ---- each sink -------------------------------------------------------------------------------


async def test_file_spool_keeps_the_whole_batch(tmp_path: Path) -> None:
    """The file spool writes a batch holding hostile rows whole: every row comes back."""
    spool = FileSpool(tmp_path / "spool")
    rows = hostile_rows("file")
    await spool.put(rows)
    spool.put_nowait(rows)  # the overflow path too
    back = [row for _, row in await spool.take(100)]
    await spool.aclose()
    check_round_trip(rows, back[:5])
    check_round_trip(rows, back[5:])


@pytest.fixture
async def stream(client: aioredis.Redis) -> AsyncIterator[str]:
    name = f"test:h3:hostile:{uuid.uuid4().hex}"
    yield name
    keys = [key async for key in client.scan_iter(match=f"{name}*")]
    if keys:
        await client.delete(*keys)


async def test_redis_spool_keeps_the_whole_batch(client: aioredis.Redis, stream: str) -> None:
    """The Redis spool writes a batch holding hostile rows whole: every row comes back."""
    spool = RedisSpool(client, stream=stream, consumer="w1")
    rows = hostile_rows("redis")
    await spool.put(rows)
    taken = await spool.take(100)
    check_round_trip(rows, [row for _, row in taken])
    await spool.ack([token for token, _ in taken])
    assert await spool.pending_count() == 0


async def test_live_feed_publishes_the_whole_batch(client: aioredis.Redis, stream: str) -> None:
    """The live feed publishes a batch holding hostile rows whole, and counts each row."""
    feed = LiveFeed(client, stream=f"{stream}:calls", prefix=stream)
    rows = hostile_rows("live")
    await feed.publish(rows)
    got: list[Row] = []
    async for row in feed.tail(last_id="0-0", block_ms=10):
        got.append(row)
        if len(got) == len(rows):
            break
    check_round_trip(rows, got)
    day = await feed.today("caller", "master", day=_day(rows[0]))
    assert day["requests"] == len(rows)


def _day(row: Row) -> date:
    return datetime.fromtimestamp(row["created_at"], tz=UTC).date()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A migrated Postgres database of this test's own on the shared server."""
    name = f"switchboard_test_h3_{uuid.uuid4().hex[:12]}"
    await admin_sql(f'CREATE DATABASE "{name}"')
    try:
        url = f"postgresql://postgres@127.0.0.1:5432/{name}"
        await upgrade(url)
        yield url
    finally:
        await admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["postgres", "sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database of each backend (Postgres migrated; SQLite migrated by ``open_engine``)."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return f"sqlite:///{tmp_path / 'calls.db'}"


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade(db_url)
    engine = make_engine(db_url)
    yield engine
    await engine.dispose()


def store_of(engine: AsyncEngine) -> CallStore:
    return PostgresStore(engine) if engine.dialect.name == "postgresql" else SqliteStore(engine)


async def test_store_keeps_the_whole_batch(engine: AsyncEngine) -> None:
    """Each store writes a batch holding hostile rows, and rows with values no column takes,
    whole: the odd ones as far as they go (or as their stub), the others untouched; the admin
    read answers every one of them in a form the API can serialise."""
    rows = hostile_rows("store")
    bad_time = record("store-bad-time").to_row()
    bad_time["created_at"] = "yesterday"
    bad_tokens = record("store-bad-tokens").to_row()
    bad_tokens["prompt_tokens"] = "many"
    rows[2:2] = [bad_time, bad_tokens]
    store = store_of(engine)
    assert await store.write(rows) == len(rows)
    assert await store.write(rows) == 0  # a replay still adds nothing
    listed, _ = await list_calls(engine, limit=100)
    assert {r["id"] for r in listed} == {r["id"] for r in rows}
    TypeAdapter(dict[str, Any]).dump_json({"object": "list", "data": listed})
    deep = await get_call(engine, "store-deep")
    assert deep is not None and TOO_DEEP in leaves(deep["request_body"])
    stub = await get_call(engine, "store-bad-time")
    assert stub is not None and stub["error_type"] == "unstorable_record"
    assert (await get_call(engine, "store-plain-1")) is not None


# ---- the admin API over rows stored before the cap ---------------------------------------------


def test_admin_api_answers_rows_stored_deep(tmp_path: Path, simulator: str) -> None:
    """A row stored deeper than the API can serialise (written before bodies were capped) is
    answered, capped, by /admin/calls and /admin/calls/{id}, not a 500."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}"
    settings = Settings(master_key=SecretStr(MASTER_KEY), database_url=url,
                        spool_dir=tmp_path / "spool")
    lane = create_app(settings, config=parse_config(sim_config(simulator), {}),
                      strict_telemetry=True)
    with serve(lane) as gateway:
        row = record("old-deep-row").to_row()
        row["request_body"] = {"extra": nested(400)}

        async def write() -> None:
            engine = make_engine(url)
            try:
                await SqliteStore(engine).write([row])
            finally:
                await engine.dispose()

        asyncio.run(write())
        one = httpx.get(f"{gateway}/admin/calls/old-deep-row", headers=AUTH)
        assert one.status_code == 200, one.text
        assert TOO_DEEP in leaves(one.json()["request_body"])
        listed = httpx.get(f"{gateway}/admin/calls", headers=AUTH)
        assert listed.status_code == 200, listed.text
        assert [r["id"] for r in listed.json()["data"]] == ["old-deep-row"]


# ---- a running gateway with body capture on ---------------------------------------------------


def _chat(gateway: str, request_id: str, **extra: Any) -> httpx.Response:
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], **extra}
    return httpx.post(f"{gateway}/v1/chat/completions", json=body, timeout=30,
                      headers={**AUTH, "x-request-id": request_id})


@pytest.mark.parametrize("levels", [150, 199])
def test_deep_request_keeps_its_row_and_its_batch(levels: int, postgres: PrivatePostgres,
                                                   redis_server: PrivateRedis, simulator: str,
                                                   tmp_path: Path) -> None:
    """With body capture on and Postgres down, a request with an extra field nested as deep as
    the parser allows is answered, spooled with its neighbours, and stored with every other
    row when Postgres is back; the admin API answers it."""
    raw = {**sim_config(simulator), "calllog": {"capture_bodies": True},
           "limits": {"max_json_depth": 200}}
    settings = Settings(master_key=SecretStr(MASTER_KEY), database_url=postgres.url,
                        redis_url=redis_server.url, spool_dir=tmp_path / "spool")
    lane = create_app(settings, config=parse_config(raw, {}), strict_telemetry=True)
    tag = f"h3-{levels}-{uuid.uuid4().hex[:6]}"
    ids = [f"{tag}-{i}" for i in range(12)]
    with serve(lane) as gateway:
        writer = writer_of(lane)
        postgres.stop()
        try:
            for i, request_id in enumerate(ids):
                extra = {"extra": nested(levels - 1)} if i % 4 == 1 else {}
                answer = _chat(gateway, request_id, **extra)
                assert answer.status_code == 200, answer.text
        finally:
            postgres.start()
        rows = _wait_rows(gateway, tag, len(ids))
        assert sorted(r["request_id"] for r in rows) == sorted(ids)
        assert writer.stats.dropped == 0
        for row in rows:
            one = httpx.get(f"{gateway}/admin/calls/{row['id']}", headers=AUTH)
            assert one.status_code == 200
            body = one.json()["request_body"]
            if int(row["request_id"].rsplit("-", 1)[1]) % 4 == 1:
                assert depth(body) == levels and TOO_DEEP not in leaves(body)
            else:
                assert body["messages"][0]["content"] == "hi"


def _wait_rows(gateway: str, tag: str, count: int) -> list[dict[str, Any]]:
    """Poll /admin/calls until ``count`` rows whose request id starts with ``tag`` are there."""
    deadline = time.monotonic() + 60
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        answer = httpx.get(f"{gateway}/admin/calls", params={"limit": 1000}, headers=AUTH)
        if answer.status_code == 200:
            rows = [r for r in answer.json()["data"]
                    if (r["request_id"] or "").startswith(tag)]
            if len(rows) >= count:
                return rows
        time.sleep(0.2)
    return rows


def test_nan_cost_is_not_a_failure() -> None:
    """A non-finite cost is written (orjson writes null), not refused."""
    row = record("nan", cost_usd=math.nan).to_row()
    assert orjson.loads(dump_row(row))["cost_usd"] is None
