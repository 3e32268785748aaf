"""The call log's read side (``app.calllog.query``) against real SQLite and Postgres databases."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app import errors
from app.calllog.query import decode_cursor, encode_cursor, get_call, list_calls, parse_time
from app.db.engine import make_engine
from app.db.models import Call
from tests.servers import free_port

T0 = datetime(2025, 3, 31, 23, 59, 0, tzinfo=UTC)
"""Just before a month boundary, so rows straddle two months (two partitions in production)."""


def call(call_id: str, at: datetime, **fields: Any) -> Call:
    """A complete ``calls`` row; ``fields`` override the defaults."""
    values: dict[str, Any] = {
        "id": call_id, "created_at": at, "finished_at": at + timedelta(seconds=1),
        "caller": "master", "endpoint": "/v1/chat/completions", "public_model": "chat",
        "provider": "sim", "target_model": "gpt-4o-mini",
        "attempts": [{"provider": "sim", "model": "gpt-4o-mini", "status": 200,
                      "error_type": None, "duration_ms": 12.5}],
        "status": "ok", "http_status": 200, "stream": False, "latency_ms": 20.0,
        "prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8,
        "tokens_estimated": False, "cost_usd": Decimal("0.000123"), "tags": {"team": "a"},
    }
    values.update(fields)
    return Call(**values)


async def insert(engine: AsyncEngine, *rows: Call) -> None:
    async with AsyncSession(engine) as session:
        session.add_all(rows)
        await session.commit()


async def all_pages(engine: AsyncEngine, *, limit: int, **filters: Any) -> list[list[str]]:
    """Follow cursors to the end; the ids of each page."""
    pages: list[list[str]] = []
    cursor = None
    while True:
        rows, cursor = await list_calls(engine, limit=limit, cursor=cursor, **filters)
        pages.append([r["id"] for r in rows])
        if cursor is None:
            return pages


async def ids(engine: AsyncEngine, **filters: Any) -> list[str]:
    rows, cursor = await list_calls(engine, limit=1000, **filters)
    assert cursor is None
    return [r["id"] for r in rows]


async def test_each_filter_selects_only_matching_calls(engine: AsyncEngine) -> None:
    """model, provider, status and caller each keep exactly the calls that match, and combine."""
    await insert(engine,
                 call("a", T0, public_model="chat", provider="sim"),
                 call("b", T0 + timedelta(seconds=1), public_model="embed", provider="sim"),
                 call("c", T0 + timedelta(seconds=2), provider="openai", status="error",
                      http_status=502, caller="key-1"),
                 call("d", T0 + timedelta(seconds=3), status="cancelled", http_status=499))
    assert await ids(engine, model="embed") == ["b"]
    assert await ids(engine, provider="openai") == ["c"]
    assert await ids(engine, status="cancelled") == ["d"]
    assert await ids(engine, caller="key-1") == ["c"]
    assert await ids(engine, model="chat", status="ok") == ["a"]
    assert await ids(engine, model="nope") == []


async def test_time_range_since_inclusive_until_exclusive(engine: AsyncEngine) -> None:
    """since includes its instant, until excludes it; other time zones are converted to UTC."""
    await insert(engine, *(call(f"m{i}", T0 + timedelta(minutes=i)) for i in range(5)))
    since, until = T0 + timedelta(minutes=1), T0 + timedelta(minutes=3)
    assert await ids(engine, since=since, until=until) == ["m2", "m1"]
    plus_two = timezone(timedelta(hours=2))
    assert await ids(engine, since=since.astimezone(plus_two)) == ["m4", "m3", "m2", "m1"]
    assert await ids(engine, until=since.replace(tzinfo=None)) == ["m0"]  # naive means UTC


async def test_newest_first_ties_broken_by_id_descending(engine: AsyncEngine) -> None:
    """Rows come newest first; rows with the same created_at come in descending id order."""
    await insert(engine, call("x", T0), call("z", T0), call("y", T0),
                 call("old", T0 - timedelta(days=40)), call("new", T0 + timedelta(hours=1)))
    assert await ids(engine) == ["new", "z", "y", "x", "old"]


async def test_pages_cover_everything_once_with_equal_timestamps(engine: AsyncEngine) -> None:
    """Cursor pages (page size not dividing tie groups) give every row once, in order."""
    rows = [call(f"r{i:02d}", T0 + timedelta(seconds=i // 5)) for i in range(23)]
    await insert(engine, *rows)
    expected = await ids(engine)
    assert len(expected) == 23
    for limit in (1, 3, 4, 7, 22, 23):
        pages = await all_pages(engine, limit=limit)
        flat = [i for page in pages for i in page]
        assert flat == expected, f"limit={limit}"
        assert all(len(page) == limit for page in pages[:-1])
        assert pages[-1], "no empty last page: next_cursor is null once the rows run out"


async def test_pages_with_a_filter_and_range(engine: AsyncEngine) -> None:
    """Pagination combined with a filter and a time range returns exactly the matching rows."""
    await insert(engine, *(call(f"r{i:02d}", T0 + timedelta(seconds=i // 3),
                                status="error" if i % 2 else "ok") for i in range(30)))
    filters = {"status": "error", "since": T0 + timedelta(seconds=2)}
    pages = await all_pages(engine, limit=4, **filters)
    assert [i for p in pages for i in p] == await ids(engine, **filters)
    assert len({i for p in pages for i in p}) == sum(len(p) for p in pages) == 12


async def test_rows_written_between_pages_neither_shift_nor_repeat(engine: AsyncEngine) -> None:
    """New (newer) calls logged while paging do not disturb the pages still to come."""
    await insert(engine, *(call(f"r{i}", T0 + timedelta(seconds=i)) for i in range(6)))
    first, cursor = await list_calls(engine, limit=3)
    await insert(engine, call("late", T0 + timedelta(hours=1)), call("r9", T0))
    second, cursor = await list_calls(engine, limit=3, cursor=cursor)
    assert [r["id"] for r in first] == ["r5", "r4", "r3"]
    assert [r["id"] for r in second] == ["r2", "r1", "r9"]
    third, cursor = await list_calls(engine, limit=3, cursor=cursor)
    assert [r["id"] for r in third] == ["r0"] and cursor is None


async def test_get_call_returns_a_json_safe_row(engine: AsyncEngine) -> None:
    """get_call gives every column, times as ISO 8601 UTC strings and the cost as a float."""
    await insert(engine, call("req-1", T0.replace(microsecond=123456), cached_tokens=2))
    row = await get_call(engine, "req-1")
    assert row is not None
    assert set(row) == set(Call.__table__.columns.keys())
    assert row["created_at"] == "2025-03-31T23:59:00.123456Z"
    assert row["finished_at"] == "2025-03-31T23:59:01.123456Z"
    assert row["cost_usd"] == pytest.approx(0.000123) and isinstance(row["cost_usd"], float)
    assert row["attempts"][0]["duration_ms"] == 12.5 and row["tags"] == {"team": "a"}
    assert json.loads(json.dumps(row)) == row
    listed, _ = await list_calls(engine, limit=1)
    assert listed == [row]


async def test_get_call_unknown_id_is_none(engine: AsyncEngine) -> None:
    """An id that was never logged gives None."""
    await insert(engine, call("req-1", T0))
    assert await get_call(engine, "req-2") is None


async def test_get_call_prefers_the_newest_of_a_reused_id(engine: AsyncEngine) -> None:
    """A client that reused its x-request-id gets the newest call under that id."""
    await insert(engine, call("dup", T0, status="error"), call("dup", T0 + timedelta(days=1)))
    row = await get_call(engine, "dup")
    assert row is not None and row["status"] == "ok"


@pytest.mark.parametrize("cursor", [
    "not a cursor!",
    base64.urlsafe_b64encode(b"garbage").decode(),
    base64.urlsafe_b64encode(b'["2025-01-01T00:00:00Z"]').decode(),
    base64.urlsafe_b64encode(b'["yesterday", "x"]').decode(),
    base64.urlsafe_b64encode(b'[1, 2]').decode(),
    base64.urlsafe_b64encode(b'\xff\xfe').decode(),
])
async def test_invalid_cursor_is_rejected(engine: AsyncEngine, cursor: str) -> None:
    """A cursor not made by the server is a 400 naming the cursor parameter."""
    with pytest.raises(errors.InvalidRequest) as caught:
        await list_calls(engine, cursor=cursor)
    assert caught.value.param == "cursor" and caught.value.code == "invalid_cursor"


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"status": "failed"}, "status"),
    ({"limit": 0}, "limit"),
    ({"limit": 1001}, "limit"),
    ({"since": T0, "until": T0 - timedelta(seconds=1)}, "until"),
])
async def test_invalid_arguments_name_their_parameter(engine: AsyncEngine,
                                                      kwargs: dict[str, Any],
                                                      param: str) -> None:
    """A bad status, limit or an inverted time range is a 400 naming the parameter."""
    with pytest.raises(errors.InvalidRequest) as caught:
        await list_calls(engine, **kwargs)
    assert caught.value.param == param and caught.value.status_code == 400


async def test_unreachable_database_is_a_503() -> None:
    """A database that cannot be reached gives 503 call_log_unavailable, not a 500."""
    eng = make_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/nothing")
    try:
        for attempt in (list_calls(eng), get_call(eng, "x")):
            with pytest.raises(errors.GatewayError) as caught:
                await attempt
            assert caught.value.status_code == 503
            assert caught.value.code == "call_log_unavailable"
    finally:
        await eng.dispose()


def test_cursor_round_trips() -> None:
    """encode_cursor and decode_cursor are inverse, to the microsecond, in UTC."""
    at = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    cursor = encode_cursor(at, "id:with.odd-chars")
    assert "=" not in cursor and "+" not in cursor and "/" not in cursor
    assert decode_cursor(cursor) == (at, "id:with.odd-chars")


@pytest.mark.parametrize(("text", "expected"), [
    ("90s", datetime(2025, 6, 1, 11, 58, 30, tzinfo=UTC)),
    ("15m", datetime(2025, 6, 1, 11, 45, tzinfo=UTC)),
    ("1h", datetime(2025, 6, 1, 11, 0, tzinfo=UTC)),
    ("7d", datetime(2025, 5, 25, 12, 0, tzinfo=UTC)),
    ("2w", datetime(2025, 5, 18, 12, 0, tzinfo=UTC)),
    ("1.5h", datetime(2025, 6, 1, 10, 30, tzinfo=UTC)),
    ("2025-05-01T10:00:00Z", datetime(2025, 5, 1, 10, 0, tzinfo=UTC)),
    ("2025-05-01T12:00:00+02:00", datetime(2025, 5, 1, 10, 0, tzinfo=UTC)),
    ("2025-05-01 10:00", datetime(2025, 5, 1, 10, 0, tzinfo=UTC)),
    ("2025-05-01", datetime(2025, 5, 1, tzinfo=UTC)),
])
def test_parse_time_accepts_iso_and_ages(text: str, expected: datetime) -> None:
    """Times are ISO 8601 (naive = UTC) or an age before now in s, m, h, d or w."""
    now = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    parsed = parse_time(text, param="since", now=now)
    assert parsed == expected and parsed.tzinfo == UTC


@pytest.mark.parametrize("text", ["yesterday", "1y", "-1h", "", "99999999999d"])
def test_parse_time_rejects_the_rest(text: str) -> None:
    """Anything else is a 400 naming the parameter it came in."""
    with pytest.raises(errors.InvalidRequest) as caught:
        parse_time(text, param="until")
    assert caught.value.param == "until"
