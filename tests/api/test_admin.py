"""The admin call-log API (``/admin/calls``) and ``switchboard logs``, against a running app on
loopback over real SQLite and Postgres databases."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.api import errors as api_errors
from app.api.admin import router
from app.calllog import LogSink
from app.calllog.cli import Seen, logs
from app.config import embedded_config
from app.db.engine import make_engine
from app.db.models import Call
from app.gateway import Gateway
from app.pricing import PriceBook
from app.resources import Resources
from app.settings import Settings
from app.stages.authenticate import Authenticate
from tests.servers import free_port, serve

MASTER_KEY = "sk-admin-test-master-key-0123456789"
REPO = Path(__file__).resolve().parents[2]


def admin_app(*, master_key: str | None, database_url: str | None = None,
              engine: AsyncEngine | None = None) -> FastAPI:
    """A minimal app serving the admin router over the gateway's own resources (an offline
    gateway, the master key's authentication); its lifespan owns the engine for
    ``database_url``, as the gateway's does."""
    settings = Settings(master_key=SecretStr(master_key) if master_key else None)
    resources = Resources(
        settings=settings, authenticator=Authenticate(settings.master_key, None),
        gateway=Gateway(config=embedded_config({}), providers={}, prices=PriceBook({}),
                        sink=LogSink()), engine=engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if database_url is None:
            yield
            return
        resources.engine = make_engine(database_url)
        try:
            yield
        finally:
            await resources.engine.dispose()

    app = FastAPI(lifespan=lifespan)
    app.state.resources = resources
    api_errors.install(app)
    app.include_router(router)
    return app


@pytest.fixture
def server(engine: AsyncEngine, database_url: str) -> Iterator[str]:
    """The admin API with a master key, served on loopback; its base URL."""
    with serve(admin_app(master_key=MASTER_KEY, database_url=database_url)) as url:
        yield url


def call(call_id: str, at: datetime, **fields: Any) -> Call:
    values: dict[str, Any] = {
        "id": call_id, "created_at": at, "finished_at": at + timedelta(seconds=1),
        "caller": "master", "endpoint": "/v1/chat/completions", "public_model": "chat",
        "provider": "sim", "target_model": "gpt-4o-mini", "attempts": [], "status": "ok",
        "http_status": 200, "stream": False, "latency_ms": 20.0, "prompt_tokens": 3,
        "completion_tokens": 5, "total_tokens": 8, "tokens_estimated": False,
        "cost_usd": Decimal("0.000123"),
    }
    values.update(fields)
    return Call(**values)


async def insert(engine: AsyncEngine, *rows: Call) -> None:
    async with AsyncSession(engine) as session:
        session.add_all(rows)
        await session.commit()


def master(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {MASTER_KEY}"})


def now() -> datetime:
    return datetime.now(UTC)


# ---- the HTTP API


async def test_without_a_key_is_401(server: str) -> None:
    """No key, or a wrong one, is a 401 in OpenAI's error shape."""
    async with httpx.AsyncClient(base_url=server) as client:
        missing = await client.get("/admin/calls")
        wrong = await client.get("/admin/calls/x", headers={"Authorization": "Bearer sk-no"})
    assert missing.status_code == 401 and wrong.status_code == 401
    assert missing.json()["error"]["code"] == "missing_api_key"
    assert wrong.json()["error"]["type"] == "authentication_error"


async def test_master_key_pages_through_calls(server: str, engine: AsyncEngine) -> None:
    """With the master key, next_cursor leads through every call once, newest first."""
    at = now().replace(microsecond=0)
    await insert(engine, *(call(f"c{i}", at - timedelta(seconds=i // 2)) for i in range(5)))
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    async with master(server) as client:
        while True:
            body = (await client.get("/admin/calls", params=params)).json()
            assert body["object"] == "list"
            seen += [row["id"] for row in body["data"]]
            if body["next_cursor"] is None:
                break
            params["cursor"] = body["next_cursor"]
    assert seen == ["c1", "c0", "c3", "c2", "c4"]


async def test_filters_and_relative_since(server: str, engine: AsyncEngine) -> None:
    """since=1h keeps the last hour; model, provider, status and caller filter exactly."""
    await insert(engine, call("old", now() - timedelta(hours=2)),
                 call("emb", now() - timedelta(minutes=30), public_model="embed"),
                 call("err", now() - timedelta(minutes=20), status="error", http_status=502,
                      provider="openai", caller="key"))
    async with master(server) as client:
        async def ids(**params: Any) -> list[str]:
            response = await client.get("/admin/calls", params=params)
            assert response.status_code == 200, response.text
            return [row["id"] for row in response.json()["data"]]

        assert await ids(since="1h") == ["err", "emb"]
        assert await ids(until="1h") == ["old"]
        assert await ids(model="embed") == ["emb"]
        assert await ids(provider="openai", status="error", caller="key") == ["err"]
        assert await ids(since=(now() - timedelta(minutes=25)).isoformat()) == ["err"]


@pytest.mark.parametrize(("params", "param"), [
    ({"status": "failed"}, "status"),
    ({"caller": "Master"}, "caller"),  # a typo: refused, not an empty list
    ({"caller": "bogus"}, "caller"),
    ({"limit": 0}, "limit"),
    ({"limit": 1001}, "limit"),
    ({"limit": "many"}, "limit"),
    ({"since": "yesterday"}, "since"),
    ({"until": "soon"}, "until"),
    ({"since": "1h", "until": "2h"}, "until"),
    ({"cursor": "bm90IGEgY3Vyc29y"}, "cursor"),
])
async def test_bad_query_parameters_are_400(server: str, params: dict[str, Any],
                                            param: str) -> None:
    """A bad parameter is a 400 invalid_request_error naming it, code ``invalid_value`` whether
    FastAPI or the route found it (FastAPI's had none)."""
    async with master(server) as client:
        response = await client.get("/admin/calls", params=params)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert error["code"] == ("invalid_cursor" if param == "cursor" else "invalid_value")


async def test_get_call_by_id_or_404(server: str, engine: AsyncEngine) -> None:
    """A logged id gives its row; an unknown one a 404 with code call_not_found."""
    await insert(engine, call("req-42", now(), tags={"team": "search"}))
    async with master(server) as client:
        found = await client.get("/admin/calls/req-42")
        missing = await client.get("/admin/calls/req-43")
    assert found.status_code == 200
    row = found.json()
    assert row["id"] == "req-42" and row["tags"] == {"team": "search"}
    assert row["created_at"].endswith("Z") and row["cost_usd"] == pytest.approx(0.000123)
    assert missing.status_code == 404
    assert missing.json()["error"] == {"message": "No call with id 'req-43' in the call log.",
                                       "type": "not_found_error", "param": "call_id",
                                       "code": "call_not_found"}


async def test_loopback_only_mode_serves_loopback_clients(engine: AsyncEngine,
                                                          database_url: str) -> None:
    """With no master key configured, a client on loopback may read the call log."""
    await insert(engine, call("anon-1", now()))
    with serve(admin_app(master_key=None, database_url=database_url)) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            response = await client.get("/admin/calls")
    assert response.status_code == 200
    assert [row["id"] for row in response.json()["data"]] == ["anon-1"]


async def test_loopback_only_mode_refuses_other_clients(engine: AsyncEngine) -> None:
    """With no master key, a client from a non-loopback address gets 403 permission_error."""
    app = admin_app(master_key=None, engine=engine)
    for host, status in (("203.0.113.9", 403), ("127.0.0.1", 200)):
        transport = httpx.ASGITransport(app=app, client=(host, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            response = await client.get("/admin/calls")
        assert response.status_code == status, host
    assert response.json()["data"] == []
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        error = (await client.get("/admin/calls")).json()["error"]
    assert error["type"] == "permission_error" and error["code"] == "admin_only"


async def test_without_a_database_is_503() -> None:
    """An app with no call-log engine answers 503 call_log_unavailable, not a 500."""
    transport = httpx.ASGITransport(app=admin_app(master_key=MASTER_KEY))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw",
                                 headers={"Authorization": f"Bearer {MASTER_KEY}"}) as client:
        response = await client.get("/admin/calls")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "call_log_unavailable"


# ---- switchboard logs query


async def run_cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """``switchboard logs ARGS`` in a thread (it blocks on HTTP), without SWITCHBOARD_ env."""
    clean = {k: None for k in os.environ if k.startswith("SWITCHBOARD_")}
    full_env: dict[str, str | None] = {**clean, **(env or {})}
    return await asyncio.to_thread(CliRunner().invoke, logs, list(args), env=full_env)


async def test_cli_query_prints_a_table(server: str, engine: AsyncEngine) -> None:
    """logs query prints a header and one readable line per call, newest first."""
    at = now()
    await insert(engine, call("q-1", at - timedelta(seconds=5)),
                 call("q-2", at, status="error", http_status=502, total_tokens=None,
                      cost_usd=None, latency_ms=1234.4))
    result = await run_cli("query", "--url", server, "--key", MASTER_KEY, "--since", "1h")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["TIME", "(UTC)", "ID", "MODEL", "PROVIDER", "STATUS", "HTTP",
                                "TOKENS", "COST", "LATENCY"]
    assert lines[1].split()[2:] == ["q-2", "chat", "sim", "error", "502", "-", "-", "1234ms"]
    assert lines[2].split()[2:] == ["q-1", "chat", "sim", "ok", "200", "8", "$0.000123",
                                    "20ms"]
    assert lines[2].startswith((at - timedelta(seconds=5)).strftime("%Y-%m-%d %H:%M:%S."))


async def test_cli_query_json_follows_cursors(server: str, engine: AsyncEngine) -> None:
    """--json --all prints every call as a JSON line across pages; the key comes from env."""
    at = now()
    await insert(engine, *(call(f"j{i}", at - timedelta(seconds=i)) for i in range(5)))
    result = await run_cli("query", "--url", server, "--json", "--all", "--limit", "2",
                           env={"SWITCHBOARD_MASTER_KEY": MASTER_KEY})
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["id"] for r in rows] == ["j0", "j1", "j2", "j3", "j4"]
    assert rows[0]["http_status"] == 200 and rows[0]["cost_usd"] == pytest.approx(0.000123)


async def test_cli_query_one_page_points_to_the_next(server: str, engine: AsyncEngine) -> None:
    """Without --all, one page is printed and the next cursor is offered on stderr."""
    await insert(engine, *(call(f"p{i}", now() - timedelta(seconds=i)) for i in range(3)))
    result = await run_cli("query", "--url", server, "--key", MASTER_KEY, "--limit", "2",
                           "--json")
    assert result.exit_code == 0
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == ["p0", "p1"]
    cursor = result.stderr.split("--cursor ")[1].strip()
    rest = await run_cli("query", "--url", server, "--key", MASTER_KEY, "--json",
                         "--cursor", cursor)
    assert [json.loads(line)["id"] for line in rest.stdout.splitlines()] == ["p2"]


async def test_cli_query_errors_are_clear(server: str) -> None:
    """Refused connections and wrong keys exit 1 with a message saying why; a bad filter is a
    usage error, exit 2, whether this command or the gateway found it."""
    down = await run_cli("query", "--url", f"http://127.0.0.1:{free_port()}", "--key", "k")
    assert down.exit_code == 1 and "cannot connect to http://127.0.0.1:" in down.output
    assert "switchboard serve" in down.output and down.stderr.startswith("switchboard: ")
    denied = await run_cli("query", "--url", server, "--key", "sk-wrong")
    assert denied.exit_code == 1 and "refused the key (401" in denied.output
    bad = await run_cli("query", "--url", server, "--key", MASTER_KEY, "--since", "soon")
    assert bad.exit_code == 2 and "Invalid value for '--since'" in bad.output
    usage = await run_cli("query", "--status", "weird")
    assert usage.exit_code == 2 and "'weird' is not one of" in usage.output
    refused = await run_cli("query", "--url", server, "--key", MASTER_KEY, "--model", "m" * 300)
    assert refused.exit_code == 2, refused.output  # the gateway's 400: a usage error too
    assert refused.stderr.startswith("switchboard: the gateway answered 400: Invalid value "
                                     "for 'model'")


@pytest.mark.parametrize(("args", "says"), [
    (("logs", "query", "--since", "garbage"), "Invalid value for '--since': 'garbage'"),
    (("logs", "query", "--until", "1_0h"), "Invalid value for '--until': '1_0h'"),
    (("logs", "query", "--since", "\uff11h"), "Invalid value for '--since'"),
    (("logs", "query", "--since", "1h", "--until", "2h"),
     "Invalid value for '--until': is earlier than --since"),
    (("logs", "query", "--cursor", "garbage"), "Invalid value for '--cursor': not a cursor"),
    (("spend", "--by", "model", "--since", "garbage"), "Invalid value for '--since'"),
    (("spend", "--by", "model", "--since", "1d", "--until", "2d"), "is earlier than --since"),
    (("experiments", "report", "x", "--since", "garbage"), "Invalid value for '--since'"),
    (("logs", "query", "--since", "99999999999w"), "reaches too far back"),
], ids=["since", "until", "fullwidth", "order", "cursor", "spend", "spend-order", "report",
        "far"])
def test_cli_bad_times_and_cursors_are_usage_errors_before_any_request(
        args: tuple[str, ...], says: str) -> None:
    """--since, --until and --cursor are checked here, with the API's own grammar, before the
    gateway is asked: exit 2 naming the option, even with no gateway to ask."""
    from app.cli import main

    result = CliRunner().invoke(main, [*args, "--url", f"http://127.0.0.1:{free_port()}"])
    assert result.exit_code == 2, result.output
    assert says in result.output and "cannot connect" not in result.output


@pytest.mark.parametrize(("url", "says", "status"), [
    ("http://127.0.0.1:99999", "port 99999 is out of range (1 to 65535)", 2),
    ("https://127.0.0.1:{port}", "TLS with https://127.0.0.1:", 1),
], ids=["port", "tls"])
def test_cli_url_port_and_tls_problems_are_told_apart(server: str, url: str, says: str,
                                                      status: int) -> None:
    """A port past 65535 is a usage error, and https:// to a plain-HTTP gateway says TLS
    failed, not that nothing listens there."""
    from app.cli import main

    port = server.rsplit(":", 1)[1].rstrip("/")
    result = CliRunner().invoke(main, ["logs", "query", "--url", url.format(port=port)])
    assert result.exit_code == status, result.output
    assert says in result.output and "cannot connect" not in result.output


def test_cli_help_documents_every_option() -> None:
    """--help of query and tail lists their options."""
    runner = CliRunner()
    query_help = runner.invoke(logs, ["query", "--help"]).output
    for option in ("--url", "--key", "--since", "--until", "--model", "--provider",
                   "--status", "--caller", "--limit", "--cursor", "--all", "--json"):
        assert option in query_help
    tail_help = runner.invoke(logs, ["tail", "--help"]).output
    for option in ("--url", "--key", "--interval", "--lookback", "--lines", "--json"):
        assert option in tail_help


# ---- switchboard logs tail


async def _read_until(stream: asyncio.StreamReader, text: str, lines: list[str]) -> None:
    while not any(text in line for line in lines):
        raw = await asyncio.wait_for(stream.readline(), timeout=20)
        assert raw, f"tail ended before printing {text!r}; got {lines}"
        lines.append(raw.decode())


async def test_cli_tail_prints_new_calls_once(server: str, engine: AsyncEngine) -> None:
    """tail prints recent calls, then each newly logged one (late-logged included) exactly once,
    and Ctrl-C ends it cleanly."""
    await insert(engine, call("before", now() - timedelta(seconds=3)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(SWITCHBOARD_MASTER_KEY=MASTER_KEY, PYTHONUNBUFFERED="1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from app.calllog.cli import logs; logs()", "tail", "--url",
        server, "--interval", "0.1", cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        await _read_until(proc.stdout, "before", lines)
        await insert(engine, call("live-1", now()))
        await _read_until(proc.stdout, "live-1", lines)
        # started 10 s ago, logged only now: inside the 30 s look-back window
        await insert(engine, call("late-1", now() - timedelta(seconds=10)))
        await _read_until(proc.stdout, "late-1", lines)
        await insert(engine, call("live-2", now()))
        await _read_until(proc.stdout, "live-2", lines)
    finally:
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), timeout=20)
    assert code == 0
    assert lines[0].startswith("TIME (UTC)")
    printed = [line.split()[2] for line in lines[1:]]
    assert printed == ["before", "live-1", "late-1", "live-2"]


async def test_cli_tail_n_prints_the_n_newest_calls_however_old(server: str,
                                                                   engine: AsyncEngine) -> None:
    """-n N prints the N most recent calls first, oldest of them first, as tail -n does, even
    those older than --lookback before the newest; then the calls logged after."""
    at = now()
    await insert(engine, *(call(f"old-{i}", at - timedelta(minutes=10, seconds=i))
                           for i in range(4)), call("newest", at - timedelta(seconds=1)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(SWITCHBOARD_MASTER_KEY=MASTER_KEY, PYTHONUNBUFFERED="1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from app.calllog.cli import logs; logs()", "tail", "--url",
        server, "--interval", "0.1", "-n", "3", "--json", cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        await _read_until(proc.stdout, "newest", lines)
        await insert(engine, call("live", now()))
        await _read_until(proc.stdout, "live", lines)
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), timeout=20)
    assert [json.loads(line)["id"] for line in lines] == ["old-1", "old-0", "newest", "live"]


async def test_cli_tail_exits_when_the_gateway_is_unreachable_at_start() -> None:
    """As its help says: a gateway unreachable at the start is an error, exit 1 at once (a
    mistyped --url), not an endless wait."""
    result = await run_cli("tail", "--url", f"http://127.0.0.1:{free_port()}", "--key", "k")
    assert result.exit_code == 1 and "cannot connect to" in result.stderr
    help_text = (await run_cli("tail", "--help")).output
    assert "unreachable at the start is an error" in " ".join(help_text.split())


def test_seen_ids_stay_bounded() -> None:
    """tail's memory of printed ids forgets ids older than the window and never exceeds its
    cap."""
    seen = Seen(cap=3)
    t = datetime(2025, 1, 1, tzinfo=UTC)
    assert seen.add("a", t) and not seen.add("a", t)
    for i in range(10):
        seen.add(f"x{i}", t + timedelta(seconds=i))
    assert len(seen) == 3 and seen.newest == t + timedelta(seconds=9)
    seen.forget_before(t + timedelta(seconds=9))
    assert len(seen) == 1 and not seen.add("x9", t)
