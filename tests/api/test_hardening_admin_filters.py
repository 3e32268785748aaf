"""Admin call-log filters a database would refuse are bad input: a 400 naming the filter, never
"database unavailable" (503) or a 500. Over HTTP against SQLite and Postgres, and through
``app.calllog.query`` for values HTTP cannot carry (lone surrogates)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app import errors
from app.calllog import query
from app.db.engine import make_engine
from app.db.models import Base, Call
from tests.api.test_admin import MASTER_KEY, admin_app
from tests.servers import serve

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
AT = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def cursor_of(stamp: str, call_id: str) -> str:
    raw = json.dumps([stamp, call_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.fixture
def server(engine: AsyncEngine, database_url: str) -> Iterator[str]:
    """The admin API over an empty ``calls`` table (SQLite or Postgres)."""
    with serve(admin_app(master_key=MASTER_KEY, database_url=database_url)) as url:
        yield url


async def _empty_calls_table(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.drop_all)
            await conn.run_sync(Base.metadata.create_all)
    finally:
        await engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def refusing_server(request: pytest.FixtureRequest,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The admin API over a ``calls`` table (SQLite or Postgres), one per database for the
    module's tests whose every request is refused: they read no row and write none."""
    if request.param == "sqlite":
        database_url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'calls.db'}"
    else:
        database_url = str(request.getfixturevalue("pg_database"))
    asyncio.run(_empty_calls_table(database_url))
    with serve(admin_app(master_key=MASTER_KEY, database_url=database_url)) as url:
        yield url


async def one_call(engine: AsyncEngine) -> None:
    async with AsyncSession(engine) as session:
        session.add(Call(
            id="c-1", request_id="r-1", created_at=AT, caller="master",
            endpoint="/v1/chat/completions", public_model="chat", provider="sim",
            attempts=[], status="ok", http_status=200, stream=False,
            tokens_estimated=False, cost_usd=Decimal("0.1")))
        await session.commit()


@pytest.mark.parametrize(("params", "param"), [
    ({"model": "chat\x00"}, "model"),
    ({"provider": "\x00"}, "provider"),
    ({"caller": "ma\x00ster"}, "caller"),
    ({"request_id": "r-1\x00"}, "request_id"),
    ({"model": "m" * 257}, "model"),
    ({"provider": "p" * 129}, "provider"),
    ({"request_id": "r" * 5000}, "request_id"),
    ({"since": "2026-01-01\x00"}, "since"),
    ({"since": "0001-01-01T00:00:00+01:00"}, "since"),
    ({"until": "9999-12-31T23:59:59-01:00"}, "until"),
    ({"since": "99999999999999999999w"}, "since"),
    ({"limit": str(2**70)}, "limit"),
    ({"limit": "-1"}, "limit"),
    ({"status": "ok\x00"}, "status"),
    ({"cursor": cursor_of("2026-01-15T12:00:00+00:00", "c-1\x00")}, "cursor"),
    ({"cursor": cursor_of("0001-01-01T00:00:00+05:00", "c-1")}, "cursor"),
    ({"cursor": cursor_of("2026-01-15T12:00:00+00:00", "c" * 500)}, "cursor"),
])
def test_filters_the_database_would_refuse_are_400(refusing_server: str,
                                                   params: dict[str, str], param: str) -> None:
    """Each bad filter value is a 400 invalid_request_error whose param names the filter."""
    response = httpx.get(refusing_server + "/admin/calls", params=params, headers=AUTH)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


@pytest.mark.parametrize("call_id", ["c-1%00", "%00", "c" * 129])
def test_a_call_id_no_row_can_have_is_400(refusing_server: str, call_id: str) -> None:
    """/admin/calls/{id} with a NUL or an over-long id is a 400 naming call_id."""
    response = httpx.get(f"{refusing_server}/admin/calls/{call_id}", headers=AUTH)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "call_id"


async def test_good_filters_still_match(server: str, engine: AsyncEngine) -> None:
    """Values at the column's length, non-ASCII text and wide time ranges still query."""
    await one_call(engine)

    async def ids(**params: str) -> list[str]:
        async with httpx.AsyncClient(base_url=server, headers=AUTH) as client:
            response = await client.get("/admin/calls", params=params)
        assert response.status_code == 200, response.text
        return [row["id"] for row in response.json()["data"]]

    assert await ids(model="chat", request_id="r-1") == ["c-1"]
    # caller is one of four values (a typo is a 400, tests/api/test_admin.py): free text
    # goes in provider.
    assert await ids(model="m" * 256) == [] and await ids(provider="ünïcödé 模型") == []
    assert await ids(since="0001-01-01T00:00:00", until="9999-12-31T23:59:59") == ["c-1"]
    async with httpx.AsyncClient(base_url=server, headers=AUTH) as client:
        assert (await client.get("/admin/calls/c-1")).json()["request_id"] == "r-1"
        # Bytes that are not UTF-8 arrive as U+FFFD (the server's decoding): no match.
        for raw in ("model=%ff", "provider=%ed%a0%80", "request_id=%c0%80"):
            response = await client.get(f"/admin/calls?{raw}")
            assert (response.status_code, response.json()["data"]) == (200, [])


@pytest.mark.parametrize("filters", [
    {"model": "chat\ud800"}, {"caller": "\udcff"}, {"request_id": "a\ud83d"},
    {"provider": "sim\x00"},
])
async def test_query_refuses_what_http_cannot_carry(engine: AsyncEngine,
                                                    filters: dict[str, str]) -> None:
    """Called directly, list_calls refuses lone surrogates (Postgres cannot encode them) as
    InvalidRequest naming the filter, before any query."""
    with pytest.raises(errors.InvalidRequest) as caught:
        await query.list_calls(engine, **filters)  # type: ignore[arg-type]  # text filters only
    assert caught.value.param == next(iter(filters))
    with pytest.raises(errors.InvalidRequest):
        await query.get_call(engine, "c\ud800")


async def test_out_of_range_datetimes_are_refused(engine: AsyncEngine) -> None:
    """An aware datetime that cannot be moved to UTC is a 400 naming since/until."""
    early = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))
    late = datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))
    with pytest.raises(errors.InvalidRequest) as caught:
        await query.list_calls(engine, since=early)
    assert caught.value.param == "since"
    with pytest.raises(errors.InvalidRequest) as caught:
        await query.list_calls(engine, until=late)
    assert caught.value.param == "until"
