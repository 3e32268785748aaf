"""The live feed: a capped stream for tail and per-day counters per model and caller."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from app import errors
from app.calllog import live
from app.calllog.live import CounterKind, LiveFeed
from app.calllog.record import Attempt, CallRecord, Row, Status
from app.calllog.seams import SpoolUnavailable
from app.prompts.store import template_not_found, version_not_found
from app.usage import Usage
from tests.calllog.servers import PrivateRedis

DAY = date(2024, 3, 9)
DAY_TS = datetime(2024, 3, 9, 23, 59, tzinfo=UTC).timestamp()


def make_row(
    n: int,
    *,
    model: str | None = "chat",
    caller: str = "key-1",
    status: Status = "ok",
    created_at: float = DAY_TS,
) -> Row:
    record = CallRecord(
        id=f"req-{n}",
        endpoint="/v1/chat/completions",
        caller=caller,
        public_model=model,
        created_at=created_at,
        status=status,
    )
    record.usage = Usage(prompt_tokens=10 * n, completion_tokens=n)
    record.cost_usd = 0.25 * n
    return record.to_row()


@pytest.fixture
async def feed(client: aioredis.Redis) -> AsyncIterator[LiveFeed]:
    prefix = f"test:live:{uuid.uuid4().hex}"
    yield LiveFeed(client, stream=f"{prefix}:calls", maxlen=100, prefix=prefix)
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)


async def test_publish_appends_rows_to_stream(client: aioredis.Redis, feed: LiveFeed) -> None:
    """Each published row is one stream entry (a one-row array); tail yields them in order."""
    rows = [make_row(1), make_row(2)]
    await feed.publish(rows)
    assert await client.xlen(feed.stream) == 2
    got: list[Row] = []
    async with contextlib.aclosing(feed.tail(last_id="0-0", block_ms=10)) as agen:
        async for row in agen:
            got.append(row)
            if len(got) == 2:
                break
    assert got == rows


async def stream_rows(client: aioredis.Redis, stream: str) -> list[int]:
    """How many rows each entry of ``stream`` holds, oldest first."""
    entries: Any = await client.xrange(stream)
    return [len(orjson.loads(fields.get(b"rows") or fields.get("rows"))) for _, fields in entries]


async def test_stream_is_trimmed_approximately(client: aioredis.Redis, feed: LiveFeed) -> None:
    """The stream keeps about maxlen rows (MAXLEN ~ on batches): never below, not unbounded."""
    for start in range(0, 20_000, 50):
        await feed.publish([make_row(n) for n in range(start, start + 50)])
    rows = sum(await stream_rows(client, feed.stream))
    assert 100 <= rows < 20_000


async def test_stream_keeps_about_maxlen_calls_whatever_the_batch_sizes(
        client: aioredis.Redis) -> None:
    """The cap counts calls, not batches: big batches after small ones leave about maxlen calls
    (not maxlen / the last batch's size), and many small ones after big ones no more than about
    maxlen (Redis trims whole nodes of at most 100 entries by default, hence the slack)."""
    prefix = f"test:live:{uuid.uuid4().hex}"
    feed = LiveFeed(client, stream=f"{prefix}:calls", maxlen=1000, prefix=prefix)
    try:
        for start in range(0, 2000, 100):
            await feed.publish([make_row(n) for n in range(start, start + 100)])
        sizes = await stream_rows(client, feed.stream)
        assert 1000 <= sum(sizes) < 1300 and set(sizes) == {1}
        for n in range(1500):
            await feed.publish([make_row(n)])
        await feed.publish([make_row(n) for n in range(100)])
        sizes = await stream_rows(client, feed.stream)
        assert 1000 <= sum(sizes) < 1300 and set(sizes) == {1}
    finally:
        await client.delete(*[key async for key in client.scan_iter(match=f"{prefix}:*")])


async def test_counters_add_up_per_model_and_caller(feed: LiveFeed) -> None:
    """Day counters sum requests, tokens, errors and cost per model and per caller."""
    await feed.publish([make_row(1), make_row(2, model="embed", caller="key-2")])
    await feed.publish([make_row(3, status="error"), make_row(4, model="embed")])
    chat = await feed.today("model", "chat", day=DAY)
    assert chat == {
        "requests": 2,
        "prompt_tokens": 40,
        "completion_tokens": 4,
        "errors": 1,
        "cost_usd": pytest.approx(1.0),
    }
    embed = await feed.today("model", "embed", day=DAY)
    assert (embed["requests"], embed["prompt_tokens"], embed["errors"]) == (2, 60, 0)
    assert embed["cost_usd"] == pytest.approx(1.5)
    key1 = await feed.today("caller", "key-1", day=DAY)
    assert (key1["requests"], key1["completion_tokens"]) == (3, 8)
    assert (await feed.today("caller", "key-2", day=DAY))["requests"] == 1


async def test_counters_use_utc_day_and_expire(client: aioredis.Redis, feed: LiveFeed) -> None:
    """Rows count on their created_at UTC day, the hash expires within 8 days, empty is zero."""
    await feed.publish([make_row(1, created_at=DAY_TS + 120)])  # 00:01 UTC on the 10th
    assert (await feed.today("model", "chat", day=DAY))["requests"] == 0
    assert (await feed.today("model", "chat", day=date(2024, 3, 10)))["requests"] == 1
    ttl = await client.ttl(feed.counter_key("model", "chat", day=date(2024, 3, 10)))
    assert 7 * 86400 < ttl <= 8 * 86400


async def test_row_without_model_counts_under_dash(feed: LiveFeed) -> None:
    """A row rejected before a model was resolved counts under the model name '-'."""
    await feed.publish([make_row(1, model=None, status="error")])
    assert (await feed.today("model", "-", day=DAY))["errors"] == 1


def failed_row(n: int, exc: errors.GatewayError, *, model: str = "chat",
               attempts: list[Attempt] | None = None) -> Row:
    """A call that ended in ``exc``, recorded as the gateway records it (``Gateway.fail``)."""
    record = CallRecord(id=f"req-{n}", endpoint="/v1/chat/completions", caller="key-1",
                        public_model=model, created_at=DAY_TS, status="error",
                        http_status=exc.status_code, error_type=exc.error_type,
                        error_message=exc.message, attempts=attempts or [])
    return record.to_row()


async def test_only_an_unknown_models_404_counts_under_dash(feed: LiveFeed) -> None:
    """The routing table's 404 for a model it does not serve counts under '-'; a served
    model's 404s (an unknown prompt template, before any provider; an upstream's) count under
    that model, as their rows do."""
    upstream = errors.from_upstream_status(404, "no such deployment")
    await feed.publish([
        failed_row(1, errors.ModelNotFound("made-up"), model="made-up"),
        failed_row(2, template_not_found("no-such-template")),
        failed_row(3, version_not_found("summarise", 9)),
        failed_row(4, upstream, attempts=[Attempt("sim", "m", 404, upstream.error_type, 2.0)]),
    ])
    assert (await feed.today("model", "-", day=DAY))["requests"] == 1
    assert (await feed.today("model", "chat", day=DAY))["requests"] == 3
    assert (await feed.today("model", "made-up", day=DAY))["requests"] == 0


def keyed_row(n: int, *, shadow_of: str | None = None) -> Row:
    row = make_row(n)
    row.update(key_id="key_a", team_id="team_1", shadow_of=shadow_of)
    return row


@pytest.mark.parametrize("ids_every_s", [0.0, 5.0])
async def test_shadow_copies_add_to_no_key_or_team_counter(client: aioredis.Redis,
                                                           ids_every_s: float) -> None:
    """A shadow copy's row keeps its original's key and team ids, but adds only to its model's
    and caller's counters (with key and team counters added at once, or held)."""
    prefix = f"test:live:{uuid.uuid4().hex}"
    feed = LiveFeed(client, stream=f"{prefix}:calls", prefix=prefix, ids_every_s=ids_every_s)
    try:
        await feed.publish([keyed_row(1), keyed_row(2, shadow_of="req-1")], everything=True)
        expected: list[tuple[CounterKind, str, int]] = [
            ("key", "key_a", 1), ("team", "team_1", 1), ("model", "chat", 2),
            ("caller", "key-1", 2)]
        for kind, name, requests in expected:
            assert (await feed.today(kind, name, day=DAY))["requests"] == requests, kind
        assert (await feed.today("key", "key_a", day=DAY))["cost_usd"] == pytest.approx(0.25)
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)


async def test_today_defaults_to_current_utc_day(feed: LiveFeed) -> None:
    """today() without a day reads the counters of the current UTC date."""
    await feed.publish([make_row(1, created_at=datetime.now(UTC).timestamp())])
    assert (await feed.today("caller", "key-1"))["requests"] == 1


async def test_tail_yields_only_rows_published_after_start(feed: LiveFeed) -> None:
    """tail() from '$' skips rows published before it started and yields later ones in order."""
    await feed.publish([make_row(0)])
    got: list[Row] = []

    async def consume() -> None:
        async for row in feed.tail(block_ms=50):
            got.append(row)
            if len(got) == 3:
                return

    task = asyncio.create_task(consume())
    n = 1
    while not task.done():  # keep publishing until the tail has seen three rows
        await feed.publish([make_row(n)])
        n += 1
        await asyncio.sleep(0.02)
    await task
    ids = [int(row["id"].removeprefix("req-")) for row in got]
    assert ids[0] >= 1
    assert ids == list(range(ids[0], ids[0] + 3))


async def test_tail_from_last_id_misses_nothing(feed: LiveFeed) -> None:
    """tail(last_id=feed.last_id()) yields exactly the rows published after that id."""
    await feed.publish([make_row(0)])
    start = await feed.last_id()
    await feed.publish([make_row(1), make_row(2)])
    async with contextlib.aclosing(feed.tail(last_id=start, block_ms=10)) as agen:
        got = [await anext(agen), await anext(agen)]
    assert [r["id"] for r in got] == ["req-1", "req-2"]


async def test_unreachable_redis_raises_spool_unavailable() -> None:
    """publish, today, last_id and tail raise SpoolUnavailable when Redis cannot be reached."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = aioredis.Redis(
        host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 0), socket_connect_timeout=1
    )
    try:
        feed = LiveFeed(client, stream="test:live:unreachable", prefix="test:live:unreachable")
        with pytest.raises(SpoolUnavailable):
            await feed.publish([make_row(1)])
        with pytest.raises(SpoolUnavailable):
            await feed.today("model", "chat")
        with pytest.raises(SpoolUnavailable):
            await feed.last_id()
        with pytest.raises(SpoolUnavailable):
            async with contextlib.aclosing(feed.tail(last_id="0-0", block_ms=10)) as agen:
                await anext(agen)
    finally:
        await client.aclose()


async def test_counters_redis_did_not_take_are_added_later_up_to_a_bound(
        redis_server: PrivateRedis, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sums that could not be sent (held while Redis is paused, or a publish that failed) are
    added by the next publish that gets through; at most ``MAX_UNSENT`` counter hashes are
    kept, the rows of others are not counted (and counted as ``uncounted``)."""
    monkeypatch.setattr(live, "MAX_UNSENT", 3)
    client = aioredis.Redis(host="127.0.0.1", port=redis_server.port,
                            retry=Retry(NoBackoff(), 0))
    feed = LiveFeed(client)
    try:
        redis_server.stop()
        feed.hold([make_row(1), make_row(2)])  # model chat, caller key-1: two hashes
        with pytest.raises(SpoolUnavailable):
            await feed.publish([make_row(3, model="embed")])  # a third hash: kept too
        feed.hold([make_row(4, model="other")])  # a fourth: past the bound
        assert feed.holding and feed.uncounted == 1
        redis_server.start()
        assert await feed.publish([make_row(5)])
        assert not feed.holding and feed.uncounted == 0
        chat = await feed.today("model", "chat", day=DAY)
        assert (chat["requests"], chat["prompt_tokens"]) == (3, 80)
        assert (await feed.today("model", "embed", day=DAY))["requests"] == 1
        assert (await feed.today("model", "other", day=DAY))["requests"] == 0
        assert (await feed.today("caller", "key-1", day=DAY))["requests"] == 5
    finally:
        await client.aclose()
