"""Spend read-outs: ``GET /admin/spend`` and ``switchboard spend`` over rows written by the call
log's stores (SQLite and Postgres), and the key and team filters of ``/admin/calls``."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from app.calllog.cli import experiments, logs, spend
from app.calllog.postgres import PostgresStore
from app.calllog.record import CallRecord, Row, Status
from app.calllog.spend import month_start
from app.calllog.sqlite import SqliteStore
from app.db.engine import make_engine
from app.db.migrate import upgrade
from app.db.models import Call, CallHour
from app.usage import Usage
from tests.api.test_admin import MASTER_KEY, admin_app, master
from tests.servers import serve


def row(call_id: str, *, key_id: str | None = None, team_id: str | None = None,
        model: str = "chat", cost: float | None = 0.5, status: Status = "ok",
        at: datetime | None = None, tokens: tuple[int, int] = (10, 4)) -> Row:
    """A call's row as the gateway makes it (``caller`` ``key`` when a key id is given)."""
    record = CallRecord(id=call_id, endpoint="/v1/chat/completions",
                        caller="key" if key_id else "master", key_id=key_id, team_id=team_id,
                        public_model=model, status=status,
                        created_at=(at or month_start() + timedelta(seconds=1)).timestamp())
    record.usage = Usage(prompt_tokens=tokens[0], completion_tokens=tokens[1])
    record.cost_usd = cost
    return record.to_row()


def month_rows() -> list[Row]:
    """Calls of this month: three keys (two in team_1) and two master-key calls."""
    return [
        row("a1", key_id="key_a", team_id="team_1", cost=1.0),
        row("a2", key_id="key_a", team_id="team_1", cost=2.0, status="error", tokens=(5, 0)),
        row("b1", key_id="key_b", team_id="team_1", model="embed", cost=4.0),
        row("c1", key_id="key_c", cost=8.0),
        row("m1", cost=0.25, model="embed"),
        row("m2", cost=None, status="cancelled", tokens=(0, 0)),
    ]


@pytest.fixture
async def log_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated, empty call log holding ``month_rows()``, written by the backend's store."""
    await upgrade(database_url)
    engine = make_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(delete(Call))
        await conn.execute(delete(CallHour))  # the database's sums keep deleted calls
    store = PostgresStore(engine) if engine.dialect.name == "postgresql" else SqliteStore(engine)
    await store.write(month_rows())
    yield engine
    await engine.dispose()


@pytest.fixture
def server(log_engine: AsyncEngine, database_url: str) -> Iterator[str]:
    with serve(admin_app(master_key=MASTER_KEY, database_url=database_url)) as url:
        yield url


async def get_spend(url: str, **params: Any) -> httpx.Response:
    async with master(url) as client:
        return await client.get("/admin/spend", params=params)


def groups(response: httpx.Response) -> list[tuple[Any, ...]]:
    assert response.status_code == 200, response.text
    return [(r["group"], r["requests"], r["prompt_tokens"], r["completion_tokens"],
             pytest.approx(r["cost_usd"]), r["errors"]) for r in response.json()["data"]]


def test_month_start_is_midnight_utc_on_the_first() -> None:
    """The default since is the first of the current month at 00:00 UTC, whatever the zone."""
    east = datetime(2025, 3, 1, 1, 30, tzinfo=UTC) + timedelta(hours=-2)  # Feb 28, 23:30 UTC
    assert month_start(datetime(2025, 3, 17, 5, 4, 3, tzinfo=UTC)) == datetime(2025, 3, 1,
                                                                               tzinfo=UTC)
    assert month_start(east) == datetime(2025, 2, 1, tzinfo=UTC)


async def test_spend_by_key_team_and_model(server: str) -> None:
    """Totals per key, team and model, costliest first; calls without a key or team are the
    group null; every grouping adds up to the same calls."""
    by_key = groups(await get_spend(server, by="key"))
    assert by_key == [("key_c", 1, 10, 4, 8.0, 0), ("key_b", 1, 10, 4, 4.0, 0),
                      ("key_a", 2, 15, 4, 3.0, 1), (None, 2, 10, 4, 0.25, 1)]
    by_team = groups(await get_spend(server, by="team"))
    assert by_team == [(None, 3, 20, 8, 8.25, 1), ("team_1", 3, 25, 8, 7.0, 1)]
    by_model = groups(await get_spend(server, by="model"))
    assert by_model == [("chat", 4, 25, 8, 11.0, 2), ("embed", 2, 20, 8, 4.25, 0)]
    body = (await get_spend(server, by="model")).json()
    assert body["by"] == "model" and body["until"] is None
    assert body["since"] == month_start().isoformat(timespec="microseconds").replace("+00:00",
                                                                                    "Z")


async def test_since_defaults_to_this_month(server: str, log_engine: AsyncEngine) -> None:
    """Calls before the start of the month are left out unless since reaches them; until
    bounds the range from above."""
    old = month_start() - timedelta(hours=1)
    store = (PostgresStore(log_engine) if log_engine.dialect.name == "postgresql"
             else SqliteStore(log_engine))
    await store.write([row("old", key_id="key_old", cost=100.0, at=old)])
    assert "key_old" not in [g[0] for g in groups(await get_spend(server, by="key"))]
    earlier = groups(await get_spend(server, by="key", since=(old - timedelta(minutes=1))
                                     .isoformat(), until=month_start().isoformat()))
    assert earlier == [("key_old", 1, 10, 4, 100.0, 0)]
    assert groups(await get_spend(server, by="team", since="1s", until="0s")) == []


@pytest.mark.parametrize(("params", "param"), [
    ({}, "by"),
    ({"by": "user"}, "by"),
    ({"by": "key", "since": "last tuesday"}, "since"),
    ({"by": "key", "until": "soon"}, "until"),
    ({"by": "key", "since": "1h", "until": "2h"}, "until"),
    ({"by": "key", "since": "9999-12-31T23:00:00-05:00"}, "since"),
])
async def test_bad_parameters_are_400(server: str, params: dict[str, Any], param: str) -> None:
    """A missing or unknown by, or a bad time, is a 400 invalid_request_error naming it."""
    response = await get_spend(server, **params)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param


async def test_spend_filters_by_key_team_and_model(server: str,
                                                   log_engine: AsyncEngine) -> None:
    """key_id, team_id and model narrow any grouping to the calls matching them all, with exact
    sums, over whole hours (the call hours) and a range starting off the hour (the calls)."""
    store = (PostgresStore(log_engine) if log_engine.dialect.name == "postgresql"
             else SqliteStore(log_engine))
    await store.write([row("d1", key_id="key_d", team_id="team_2", cost=16.0, tokens=(7, 3)),
                       row("d2", key_id="key_d", team_id="team_2", model="embed", cost=32.0,
                           status="error", tokens=(1, 0))])
    whole = month_start().isoformat()
    off_hour = (month_start() + timedelta(microseconds=1)).isoformat()
    for since in (whole, off_hour):
        team_1 = groups(await get_spend(server, by="model", team_id="team_1", since=since))
        assert team_1 == [("embed", 1, 10, 4, 4.0, 0), ("chat", 2, 15, 4, 3.0, 1)]
        team_2 = groups(await get_spend(server, by="model", team_id="team_2", since=since))
        assert team_2 == [("embed", 1, 1, 0, 32.0, 1), ("chat", 1, 7, 3, 16.0, 0)]
        chat = groups(await get_spend(server, by="team", model="chat", since=since))
        assert chat == [("team_2", 1, 7, 3, 16.0, 0), (None, 2, 10, 4, 8.0, 1),
                        ("team_1", 2, 15, 4, 3.0, 1)]
        both = groups(await get_spend(server, by="key", team_id="team_1", model="chat",
                                      key_id="key_a", since=since))
        assert both == [("key_a", 2, 15, 4, 3.0, 1)]
        assert groups(await get_spend(server, by="key", team_id="team_2", key_id="key_a",
                                      since=since)) == []
    body = (await get_spend(server, by="model", team_id="team_2")).json()
    assert body["filters"] == {"team_id": "team_2"}


@pytest.mark.parametrize(("params", "param"), [
    ({"team_id": ""}, "team_id"),
    ({"key_id": "k" * 65}, "key_id"),
    ({"model": "m\x00"}, "model"),
])
async def test_bad_filters_are_400(server: str, params: dict[str, Any], param: str) -> None:
    """An empty filter, or one no row can match (too long, a NUL), is a 400 naming it."""
    response = await get_spend(server, by="model", **params)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


async def test_cli_spend_filters(server: str) -> None:
    """switchboard spend --team-id/--key-id/--model pass the filters to the admin API."""
    result = await run(spend, "--url", server, "--key", MASTER_KEY, "--by", "model",
                       "--team-id", "team_1", "--json")
    assert result.exit_code == 0, result.output
    assert [(r["group"], r["requests"]) for r in json.loads(result.output)] == [("embed", 1),
                                                                                ("chat", 2)]
    result = await run(spend, "--url", server, "--key", MASTER_KEY, "--by", "team",
                       "--model", "embed", "--key-id", "key_b", "--json")
    assert result.exit_code == 0, result.output
    assert [(r["group"], r["requests"]) for r in json.loads(result.output)] == [("team_1", 1)]


async def test_spend_needs_the_admin_key(server: str) -> None:
    """Without the master key, spend is a 401 like the rest of the admin API."""
    async with httpx.AsyncClient(base_url=server) as client:
        response = await client.get("/admin/spend", params={"by": "key"})
    assert response.status_code == 401


async def test_calls_filter_by_key_and_team(server: str) -> None:
    """/admin/calls filters on key_id and team_id; an id longer than its column is a 400."""
    async with master(server) as client:
        async def ids(**params: str) -> list[str]:
            response = await client.get("/admin/calls", params=params)
            assert response.status_code == 200, response.text
            return sorted(r["id"] for r in response.json()["data"])

        assert await ids(key_id="key_a") == ["a1", "a2"]
        assert await ids(team_id="team_1") == ["a1", "a2", "b1"]
        assert await ids(team_id="team_1", model="embed") == ["b1"]
        too_long = await client.get("/admin/calls", params={"team_id": "t" * 65})
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "team_id"


# ---- the command line


async def run(command: Any, *args: str) -> Result:
    """A CLI command in a thread (it blocks on HTTP), without SWITCHBOARD_ env."""
    clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("SWITCHBOARD_")}
    return await asyncio.to_thread(CliRunner().invoke, command, list(args), env=clean)


async def test_cli_spend_table_and_json(server: str) -> None:
    """switchboard spend prints a table, costliest first ("-" for no team), or --json rows."""
    table = await run(spend, "--url", server, "--key", MASTER_KEY, "--by", "team")
    assert table.exit_code == 0, table.output
    lines = [line.split() for line in table.output.splitlines()]
    assert lines == [["GROUP", "REQUESTS", "PROMPT", "COMPLETION", "COST", "ERRORS"],
                     ["-", "3", "20", "8", "$8.250000", "1"],
                     ["team_1", "3", "25", "8", "$7.000000", "1"]]
    as_json = await run(spend, "--url", server, "--key", MASTER_KEY, "--by", "key", "--json")
    assert as_json.exit_code == 0, as_json.output
    assert [r["group"] for r in json.loads(as_json.output)] == ["key_c", "key_b", "key_a",
                                                                None]


async def test_cli_spend_errors_are_clear(server: str) -> None:
    """A bad --since is a usage error (exit 2) found before asking the gateway; --by is
    required and checked."""
    bad = await run(spend, "--url", server, "--key", MASTER_KEY, "--by", "key", "--since", "x")
    assert bad.exit_code == 2 and "Invalid value for '--since'" in bad.output
    missing = await run(spend, "--url", server)
    assert missing.exit_code == 2 and "--by" in missing.output
    wrong = await run(spend, "--by", "user")
    assert wrong.exit_code == 2 and "'user' is not one of" in wrong.output


async def test_cli_logs_filter_by_key_and_team(server: str) -> None:
    """logs query --key-id / --team-id pass the filters to the admin API."""
    result = await run(logs, "query", "--url", server, "--key", MASTER_KEY, "--json",
                       "--team-id", "team_1", "--key-id", "key_b")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["id"] for line in result.output.splitlines()] == ["b1"]


async def test_cli_shows_the_gateways_own_404(server: str) -> None:
    """A 404 the admin API answers (an experiment not in the config) is shown in the gateway's
    words, a usage error (exit 2: a name it does not know); only a path the server does not
    serve reads as "no call log API" (exit 1)."""
    unknown = await run(experiments, "report", "nosuch", "--url", server, "--key", MASTER_KEY)
    assert unknown.exit_code == 2
    assert "the gateway answered 404: No experiment named 'nosuch'" in unknown.output
    assert "no call log API" not in unknown.output
    elsewhere = await run(spend, "--url", server + "/not-the-root", "--key", MASTER_KEY,
                          "--by", "key")
    assert elsewhere.exit_code == 1 and "has no call log API (404)" in elsewhere.output


def test_spend_prints_a_cost_under_a_micro_dollar_as_not_free() -> None:
    """A group that cost $0.00000004 reads as that, not as ``$0.000000``."""
    from app.calllog.cli import usd

    assert [usd(x) for x in (0.0, 0.00000004, 0.0000012, 12.5)] == [
        "$0.000000", "$4e-08", "$0.000001", "$12.500000"]


def _answering(body: bytes, content_type: bytes) -> Any:
    """An ASGI app that answers every request 200 with ``body``: something at --url that is
    no gateway (a login page, another service)."""
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", content_type)]})
        await send({"type": "http.response.body", "body": body})
    return app


@pytest.mark.parametrize(("body", "content_type"), [
    (b"<html>Sign in</html>", b"text/html"), (b"[1, 2, 3]", b"application/json"),
    (b"null", b"application/json"), (b'{"data": "weird"}', b"application/json"),
    (b'{"experiment": "e", "variants": []}', b"application/json"),
], ids=["html", "array", "null", "data-not-a-list", "report-not-a-report"])
def test_cli_refuses_a_200_that_is_no_admin_answer(body: bytes, content_type: bytes) -> None:
    """A 200 from something that is no gateway is a one-line error (exit 1), not a traceback,
    for every command that reads the admin API."""
    with serve(_answering(body, content_type)) as url:
        for command, args in ((spend, ["--by", "key"]), (logs, ["query"]),
                              (experiments, ["report", "e"])):
            result = CliRunner().invoke(command, [*args, "--url", url, "--key", MASTER_KEY])
            assert result.exit_code == 1, (command.name, result.output)
            assert "is it a Switchboard gateway" in result.output
            assert not isinstance(result.exception, (KeyError, TypeError, ValueError))


@pytest.mark.parametrize("key", [MASTER_KEY + "\r", MASTER_KEY + "\n", "sk-cl\u00e9-0123456789",
                                 "sk two words"], ids=["cr", "lf", "non-ascii", "space"])
def test_cli_refuses_a_key_no_header_can_carry_without_showing_it(key: str) -> None:
    """A key ending in a line ending (an env file saved with Windows line endings), or holding
    a non-ASCII character or a space: a one-line error that never shows the key (httpx's
    refusal quoted the whole header), for every command that reads the admin API."""
    for command, args in ((spend, ["--by", "key"]), (logs, ["query"]),
                          (experiments, ["report", "e"])):
        result = CliRunner().invoke(command, [*args, "--url", "http://127.0.0.1:9",
                                              "--key", key])
        assert result.exit_code == 1, (command.name, result.output)
        assert "a character an HTTP header cannot carry" in result.output
        assert key.strip() not in result.output and "0123456789" not in result.output
