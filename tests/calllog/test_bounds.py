"""Every client- or upstream-chosen value a call row carries is bounded before any sink (Redis
keys and streams, the spools, the database, the log line), the same way for every sink."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from pydantic import SecretStr
from sqlalchemy import String

from app import errors
from app.calllog.columns import clean_text, json_text
from app.calllog.live import LiveFeed
from app.calllog.record import (
    MAX_TAG_KEY,
    MAX_TAG_VALUE,
    MAX_TAGS,
    TEXT_CAPS,
    TRUNCATED,
    CallRecord,
    LogSink,
    Row,
    bound_text,
)
from app.config import parse_config
from app.db.models import Call
from app.main import create_app
from app.settings import Settings
from tests.api.conftest import MASTER_KEY, sim_config
from tests.calllog.servers import PrivatePostgres, PrivateRedis, writer_of
from tests.servers import serve

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
HUGE = 1 << 20  # 1 MiB
FIELDS = {"public_model": "public_model", "end_user": "end_user", "error_message": "error_message",
          "finish_reason": "finish_reason", "response_model": "response_model",
          "system_fingerprint": "system_fingerprint"}
"""Row key -> CallRecord attribute of every capped text field."""


def record(**fields: Any) -> CallRecord:
    return CallRecord(id=uuid.uuid4().hex, endpoint="/v1/chat/completions", caller="master",
                      **fields)


@pytest.mark.parametrize("key", sorted(TEXT_CAPS))
@pytest.mark.parametrize("length", [0, 1, "cap", "cap+1", HUGE])
def test_text_fields_are_cut_to_their_cap(key: str, length: int | str) -> None:
    """Each capped field keeps a value up to its cap whole, and cuts a longer one to exactly the
    cap, ending in the marker."""
    cap = TEXT_CAPS[key]
    size = {"cap": cap, "cap+1": cap + 1}.get(str(length), length)
    assert isinstance(size, int)
    value = "é" * size
    row = record(**{FIELDS[key]: value}).to_row()
    if size <= cap:
        assert row[key] == value
    else:
        assert len(row[key]) == cap and row[key].endswith(TRUNCATED)
        assert row[key].startswith("é" * (cap - len(TRUNCATED)))


def test_caps_fit_their_columns() -> None:
    """No cap exceeds its column, so the database never cuts a value a second way."""
    for key, cap in TEXT_CAPS.items():
        column = Call.__table__.columns[key]
        assert isinstance(column.type, String)
        assert column.type.length is None or cap <= column.type.length, key


def test_text_that_is_not_a_string_is_written_as_one() -> None:
    """A non-string in a text field becomes its (bounded) string."""
    row = record(public_model=12345).to_row()
    assert row["public_model"] == "12345"
    assert bound_text(["x"] * HUGE, 64).endswith(TRUNCATED)


@pytest.mark.parametrize(("entries", "key_len", "value_len"), [
    (3, 10, 10), (MAX_TAGS, MAX_TAG_KEY, MAX_TAG_VALUE), (MAX_TAGS + 1, 5, 5), (5_000, 10, 10),
    (2, HUGE, 10), (2, 10, HUGE), (40, HUGE // 40, HUGE // 40),
])
def test_metadata_is_bounded(entries: int, key_len: int, value_len: int) -> None:
    """tags keep at most MAX_TAGS entries (the last one saying how many more there were), keys
    and values cut to their caps; metadata within the caps is kept as it is."""
    metadata = {f"{i:04d}".ljust(key_len, "k"): "v" * value_len for i in range(entries)}
    tags = record(tags=metadata).to_row()["tags"]
    assert len(tags) <= MAX_TAGS
    assert all(len(k) <= MAX_TAG_KEY and len(v) <= MAX_TAG_VALUE for k, v in tags.items())
    if entries <= MAX_TAGS and key_len <= MAX_TAG_KEY and value_len <= MAX_TAG_VALUE:
        assert tags == metadata
    if entries > MAX_TAGS:
        assert tags[TRUNCATED] == f"{entries - MAX_TAGS + 1} more"


def test_log_sink_line_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    """The call log line (call log off) carries the bounded row, not the client's megabytes."""
    caplog.set_level(logging.DEBUG, logger="switchboard.calls")
    LogSink().submit(record(public_model="m" * HUGE, end_user="u" * HUGE,
                            tags={"k" * HUGE: "v" * HUGE}, error_message="e" * HUGE))
    (line,) = [r.getMessage() for r in caplog.records if r.name == "switchboard.calls"]
    assert len(line) < 8_000


# ---- Redis keys ------------------------------------------------------------------------------


@pytest.fixture
async def feed(client: aioredis.Redis) -> AsyncIterator[LiveFeed]:
    prefix = f"test:h3:bounds:{uuid.uuid4().hex}"
    yield LiveFeed(client, stream=f"{prefix}:calls", prefix=prefix)
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)


def unknown_model_row(name: str) -> Row:
    """The row of a call naming a model the gateway does not serve (its routing table's 404)."""
    unknown = errors.ModelNotFound(name)
    rec = record(public_model=name, status="error", http_status=unknown.status_code,
                 error_type=unknown.error_type, error_message=unknown.message)
    return rec.to_row()


async def test_unknown_models_add_no_counter_keys(client: aioredis.Redis, feed: LiveFeed) -> None:
    """Rows of models that do not exist (404 before any provider) count under '-': made-up
    names, however many and however long, add no Redis keys of their own."""
    rows = [unknown_model_row(f"made-up-{i}-" + "x" * (i * 1000)) for i in range(50)]
    await feed.publish(rows)
    day = datetime.fromtimestamp(rows[0]["created_at"], tz=UTC).date()
    assert (await feed.today("model", "-", day=day))["requests"] == 50
    keys = [key async for key in client.scan_iter(match=f"{feed.stream[:-6]}:usage:*")]
    assert len(keys) == 2  # '-' and the caller


async def test_counter_keys_are_bounded(client: aioredis.Redis, feed: LiveFeed) -> None:
    """A long model name that did reach a provider (a row from elsewhere than to_row, say) is
    cut in its counter key; the key's length is bounded."""
    row = record(public_model="p" * HUGE, provider="sim").to_row()
    row["public_model"] = "p" * HUGE  # as an unbounded row would carry it
    await feed.publish([row])
    keys = [key async for key in client.scan_iter(match=f"{feed.stream[:-6]}:usage:*")]
    assert keys and max(len(k) for k in keys) < 400


# ---- a running gateway: Redis memory and stored rows ------------------------------------------


def redis_bytes(port: int) -> int:
    """What every key of a Redis takes: its name plus MEMORY USAGE (all samples)."""
    client = redis.Redis(port=port)
    try:
        return sum(len(key) + int(client.memory_usage(key, samples=0) or 0)
                   for key in client.scan_iter())
    finally:
        client.close()


def hostile_calls(gateway: str, tag: str) -> list[httpx.Response]:
    """Requests with client-chosen strings of up to a megabyte each: unknown model names, user,
    metadata keys and values, and an oversized x-request-id. (Bodies forwarded upstream stay
    under 1 MiB: past that aiohttp warns, and warnings are errors in the tests.)"""
    answers = []
    with httpx.Client(base_url=gateway, headers=AUTH, timeout=60) as http:
        for i in range(3):
            answers.append(http.post("/v1/chat/completions", json={
                "model": f"{tag}-{i}-" + "m" * HUGE,
                "messages": [{"role": "user", "content": "hi"}]}))
        for i in range(3):
            answers.append(http.post("/v1/chat/completions", headers={
                "x-request-id": "r" * 8_000}, json={
                "model": "chat", "messages": [{"role": "user", "content": "hi"}],
                "user": f"{tag}-{i}-" + "u" * (HUGE // 4),
                "metadata": {f"{tag}-{j}-" + "k" * (HUGE // 32): "v" * (HUGE // 32)
                             for j in range(8)}}))
    return answers


def test_gateway_bounds_what_reaches_redis_and_the_database(
        postgres: PrivatePostgres, redis_server: PrivateRedis, simulator: str,
        tmp_path: Path) -> None:
    """Megabyte model names, users and metadata sent to a running gateway take a few kilobytes
    in Redis (live stream, day counters, and the spool while Postgres is down), and the rows
    stored afterwards hold the bounded values."""
    settings = Settings(master_key=SecretStr(MASTER_KEY), database_url=postgres.url,
                        redis_url=redis_server.url, spool_dir=tmp_path / "spool")
    lane = create_app(settings, config=parse_config(sim_config(simulator), {}),
                      strict_telemetry=True)
    tag = uuid.uuid4().hex[:8]
    with serve(lane) as gateway:
        writer = writer_of(lane)
        before = redis_bytes(redis_server.port)
        answers = hostile_calls(gateway, f"{tag}a")
        postgres.stop()  # the next rows wait in the Redis spool
        try:
            answers += hostile_calls(gateway, f"{tag}b")
            deadline = time.monotonic() + 30
            while writer.stats.redis_spooled < 6 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert writer.stats.redis_spooled >= 6
            grown = redis_bytes(redis_server.port) - before
        finally:
            postgres.start()
        assert [a.status_code for a in answers] == [404, 404, 404, 200, 200, 200] * 2
        assert grown < 200_000, grown  # the requests carried 10 MB of such strings
        rows = wait_rows(gateway, 12)
        assert writer.stats.dropped == 0
    assert len(rows) == 12
    for row in rows:
        assert len(row["public_model"]) <= TEXT_CAPS["public_model"]
        assert row["end_user"] is None or len(row["end_user"]) == TEXT_CAPS["end_user"]
        assert row["request_id"] is None
        assert len(row["error_message"] or "") <= TEXT_CAPS["error_message"]
        tags = row["tags"] or {}
        assert len(tags) <= MAX_TAGS
        assert all(len(k) <= MAX_TAG_KEY and len(v) <= MAX_TAG_VALUE for k, v in tags.items())
    assert sum(1 for r in rows if r["end_user"]) == 6


def wait_rows(gateway: str, count: int) -> list[dict[str, Any]]:
    """Poll /admin/calls until it lists ``count`` rows (or 60 s pass)."""
    deadline = time.monotonic() + 60
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        answer = httpx.get(f"{gateway}/admin/calls", params={"limit": 100}, headers=AUTH)
        if answer.status_code == 200:
            rows = answer.json()["data"]
            if len(rows) >= count:
                break
        time.sleep(0.2)
    return rows


def test_a_nul_is_shown_not_dropped() -> None:
    """Postgres text holds no NUL; one is stored as U+FFFD, so a model named ``ch\\x00at`` is
    not read back as the real ``chat``, in text columns and in JSON alike."""
    assert clean_text("ch\x00at") == "ch\ufffdat"
    assert json.loads(json_text({"k\x00": ["v\x00"]})) == {"k\ufffd": ["v\ufffd"]}
