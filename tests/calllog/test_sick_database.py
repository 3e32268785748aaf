"""The call log under sick databases, through running gateways: Postgres down or hung at start
(the gateway serves, spools, says so, and replays once the database answers migrated), a
gateway killed with ``kill -9`` while Postgres hangs (no answered call loses its row), spools
that cannot be written (reported at start), and warnings that do not flood."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pydantic import SecretStr
from sqlalchemy import text

from app.calllog.file_spool import FileSpool
from app.calllog.live import LiveFeed
from app.calllog.postgres import PostgresStore
from app.calllog.record import CallRecord
from app.calllog.redis_spool import RedisSpool
from app.calllog.writer import CallLogWriter
from app.config import parse_config
from app.db.engine import make_engine
from app.db.migrate import upgrade
from app.main import create_app
from app.resources import RedisPools
from app.serving import FORCED_EXIT_MESSAGE, FORCED_EXIT_STATUS
from app.settings import Settings
from tests.api.conftest import MASTER_KEY, sim_config
from tests.calllog.freeze_proxy import FreezeProxy
from tests.calllog.servers import PrivatePostgres, PrivateRedis, serve_process, writer_of
from tests.metrics.scrape import value, wait_for
from tests.servers import free_port, serve

SWITCHBOARD = str(Path(sys.executable).with_name("switchboard"))
PASSWORD = "pg-secret-never-shown-0451"  # trust auth ignores it; nothing may show it
# ``postgres`` (module-scoped, stopped and started here; each test makes its own database) and
# ``redis_server`` come from tests/calllog/conftest.py.


def new_database(server: PrivatePostgres, name: str, *, migrated: bool) -> str:
    """A fresh database on ``server`` (up), its URL carrying ``PASSWORD``."""
    subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", "-c",
                    f"CREATE DATABASE {name}"], check=True, capture_output=True)
    url = f"postgresql+asyncpg://postgres:{PASSWORD}@127.0.0.1:{server.port}/{name}"
    if migrated:
        asyncio.run(upgrade(url))
    return url


def pg_up(server: PrivatePostgres) -> bool:
    return subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", str(server.port)],
                          capture_output=True).returncode == 0


@contextmanager
def stopped(server: PrivatePostgres) -> Iterator[None]:
    """``server`` stopped for the block; running again after it, whatever happens."""
    server.stop()
    try:
        yield
    finally:
        if not pg_up(server):
            server.start()


async def _request_ids(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text("SELECT request_id FROM calls"))
            return [str(r[0]) for r in result]
    finally:
        await engine.dispose()


def stored(url: str, ids: set[str], *, timeout_s: float = 60) -> list[str]:
    """The request ids of ``ids`` stored, polled until all are there (or time out), with
    their duplicates."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            found = [i for i in asyncio.run(_request_ids(url)) if i in ids]
        except Exception:  # noqa: BLE001 - not up or not migrated yet: poll again
            found = []
        if set(found) == ids or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def until(check: Callable[[], bool], *, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def calls(base_url: str, prefix: str, n: int) -> set[str]:
    """``n`` calls, every third one streamed, each answered 200; their request ids."""
    ids = set()
    with openai.OpenAI(base_url=base_url + "/v1", api_key=MASTER_KEY, max_retries=0) as client:
        for i in range(n):
            request_id = f"{prefix}-{i}"
            messages: Any = [{"role": "user", "content": f"log me {request_id}"}]
            if i % 3 == 2:
                with client.chat.completions.with_streaming_response.create(
                        model="chat", messages=messages, stream=True,
                        extra_headers={"x-request-id": request_id}) as streamed:
                    assert streamed.status_code == 200
                    assert [c for c in streamed.parse() if c.choices]
            else:
                raw = client.chat.completions.with_raw_response.create(
                    model="chat", messages=messages, extra_headers={"x-request-id": request_id})
                assert raw.status_code == 200
                assert raw.parse().choices[0].message.content
            ids.add(request_id)
    return ids


def readyz(base_url: str) -> dict[str, Any]:
    response = httpx.get(base_url + "/readyz")
    assert response.status_code == 200, response.text  # a sick call log never makes it 503
    assert PASSWORD not in response.text
    body: dict[str, Any] = response.json()
    return body


def store_state(base_url: str) -> dict[str, Any]:
    state: dict[str, Any] = readyz(base_url)["calllog"]["store"]
    return state


@contextmanager
def gateway(settings: Settings, simulator: str) -> Iterator[tuple[str, CallLogWriter]]:
    lane = create_app(settings, config=parse_config(sim_config(simulator), {}),
                      strict_telemetry=True)
    with serve(lane) as url:
        yield url, writer_of(lane)


def settings_for(tmp_path: Path, url: str, redis_url: str | None = None,
                 spool_dir: Path | None = None) -> Settings:
    return Settings(master_key=SecretStr(MASTER_KEY), database_url=url, redis_url=redis_url,
                    spool_dir=spool_dir or tmp_path / "spool")


# ---- item 17: start, serve, spool, say so, replay -------------------------------------------


@pytest.mark.parametrize("with_redis", [False, True])
def test_starts_while_postgres_is_down_and_replays_every_row_once(
        with_redis: bool, postgres: PrivatePostgres, redis_server: PrivateRedis, simulator: str,
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Postgres down at start: calls answered, /readyz 200 saying why, store_up 0; once
    Postgres is back, every row lands exactly once and the gauge goes to 1."""
    url = new_database(postgres, f"down_at_start_{int(with_redis)}", migrated=True)
    settings = settings_for(tmp_path, url, redis_server.url if with_redis else None)
    with caplog.at_level(logging.INFO), stopped(postgres), gateway(settings, simulator) as (
            base, writer):
        ids = calls(base, f"down-{with_redis}", 24)
        state = store_state(base)
        assert state["up"] is False and state["reason"] == "unreachable"
        assert "could not check the database" in state["detail"]
        samples = wait_for(base, MASTER_KEY,
                           lambda s: ("switchboard_calllog_store_up", frozenset()) in s)
        assert value(samples, "switchboard_calllog_store_up") == 0
        assert PASSWORD not in httpx.get(base + "/metrics", headers={
            "Authorization": f"Bearer {MASTER_KEY}"}).text
        postgres.start()
        found = stored(url, ids)
        until(lambda: store_state(base)["up"] is True)
        more = calls(base, f"after-{with_redis}", 6)
        found += stored(url, more)
        samples = wait_for(base, MASTER_KEY,
                           lambda s: value(s, "switchboard_calllog_store_up") == 1)
        assert value(samples, "switchboard_calllog_store_up") == 1
        assert writer.stats.dropped == 0
    assert sorted(found) == sorted(ids | more)  # every row, once
    assert "call log database unavailable at start" in caplog.text
    assert "call store is back" in caplog.text
    assert PASSWORD not in caplog.text


def test_a_database_back_unmigrated_keeps_spooling_until_migrated(
        postgres: PrivatePostgres, simulator: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """A database never reached at start is checked when it answers: unmigrated, rows keep
    being spooled and /readyz says so; once migrated, every row lands exactly once."""
    url = new_database(postgres, "back_unmigrated", migrated=False)
    settings = settings_for(tmp_path, url)
    with caplog.at_level(logging.INFO), stopped(postgres), gateway(settings, simulator) as (
            base, writer):
        ids = calls(base, "unmigrated-down", 12)
        assert store_state(base)["reason"] == "unreachable"
        postgres.start()
        until(lambda: store_state(base).get("reason") == "unmigrated")  # none while still ok
        state = store_state(base)
        assert state["up"] is False and "switchboard db upgrade" in state["detail"]
        ids |= calls(base, "unmigrated-up", 12)
        assert writer.stats.stored == 0
        asyncio.run(upgrade(url))
        found = stored(url, ids)
        until(lambda: store_state(base)["up"] is True)
        assert writer.stats.dropped == 0
    assert sorted(found) == sorted(ids)
    assert "call log database not migrated" in caplog.text
    assert "call log database migrated" in caplog.text
    assert PASSWORD not in caplog.text


def test_tables_gone_under_a_running_gateway_read_as_unmigrated(
        postgres: PrivatePostgres, simulator: str, tmp_path: Path) -> None:
    """A database whose tables go while the gateway runs (dropped and recreated empty): its
    writes fail, and /readyz says ``unmigrated`` with what to run, not ``write_failed``; the
    rows are spooled, and land once each when it is migrated again."""
    url = new_database(postgres, "tables_gone", migrated=True)
    settings = settings_for(tmp_path, url)
    with gateway(settings, simulator) as (base, writer):
        ids = calls(base, "before-drop", 3)
        stored(url, ids)
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(postgres.port), "-U", "postgres",
                        "-d", "tables_gone", "-c",
                        "DROP SCHEMA public CASCADE; CREATE SCHEMA public"],
                       check=True, capture_output=True)
        later = calls(base, "after-drop", 6)
        until(lambda: store_state(base).get("reason") == "unmigrated")  # none while still ok
        assert "switchboard db upgrade" in store_state(base)["detail"]
        asyncio.run(upgrade(url))
        found = stored(url, later)
        assert writer.stats.dropped == 0
    assert sorted(found) == sorted(later)  # every row after the drop, once


def gateway_env(tmp_path: Path, simulator: str, url: str,
                redis_url: str | None = None, *, calllog: str = "") -> dict[str, str]:
    """The environment of a ``switchboard serve`` on the simulator; ``calllog``: more
    ``calllog`` settings, as YAML flow items (``"forget_idle_s: 1"``)."""
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "providers:\n  sim: {type: openai, base_url: '" + simulator + "/v1'}\n"
        "models:\n  chat: {targets: [{provider: sim, model: gpt-4o-mini}]}\n"
        "calllog: {claim_idle_s: 1" + (f", {calllog}" if calllog else "") + "}\n")
    env = {**os.environ, "SWITCHBOARD_CONFIG": str(config), "SWITCHBOARD_DATABASE_URL": url,
           "SWITCHBOARD_SPOOL_DIR": str(tmp_path / "spool"),
           "SWITCHBOARD_MASTER_KEY": MASTER_KEY}
    env.pop("SWITCHBOARD_REDIS_URL", None)
    if redis_url:
        env["SWITCHBOARD_REDIS_URL"] = redis_url
    return env


@pytest.mark.parametrize("sickness", ["stopped", "hung"])
def test_switchboard_serve_starts_against_a_sick_postgres(
        sickness: str, postgres: PrivatePostgres, simulator: str, tmp_path: Path) -> None:
    """`switchboard serve` against a Postgres that is down or accepts and never answers:
    it warns, serves, reports the database unreachable, and stores every row once it is back."""
    url = new_database(postgres, f"serve_{sickness}", migrated=True)
    proxy = FreezeProxy(postgres.port)
    env = gateway_env(tmp_path, simulator, proxy.url(url))
    port, log = free_port(), tmp_path / "serve.log"
    base = f"http://127.0.0.1:{port}"
    if sickness == "hung":
        proxy.freeze()
    else:
        postgres.stop()
    proc = None
    try:
        proc = serve_process(env, port, log=log)
        ids = calls(base, f"serve-{sickness}", 15)
        state = store_state(base)
        assert state["reason"] == "unreachable", (state, log.read_text())
        if sickness == "hung":
            proxy.drop()
            proxy.thaw()
        else:
            postgres.start()
        found = stored(url, ids)
        until(lambda: store_state(base)["up"] is True)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        proxy.close()
        if not pg_up(postgres):
            postgres.start()
    assert sorted(found) == sorted(ids)
    output = log.read_text()
    assert "warning: could not check the database" in output and "serving anyway" in output
    # the drift baselines do not wait for the database a second time (app.metrics.runtime)
    assert "drift baselines not loaded yet (the call log's database is unreachable)" in output
    # nor does the call log: serve's own check found it unreachable (app.calllog.runtime)
    assert "call log database unavailable at start (switchboard serve could not check" in output
    assert PASSWORD not in output


# ---- item 18: kill -9 while Postgres hangs ------------------------------------------------


@pytest.mark.parametrize("with_redis", [False, True])
@pytest.mark.parametrize("ending", ["SIGKILL", "SIGTERM", "Ctrl-C twice"])
def test_a_gateway_ended_while_postgres_hangs_loses_no_answered_call(
        ending: str, with_redis: bool, postgres: PrivatePostgres, redis_server: PrivateRedis,
        simulator: str, tmp_path: Path) -> None:
    """Postgres frozen (accepting, never answering), N calls answered 200, then the gateway
    ended: killed with SIGKILL before any store timeout, stopped with SIGTERM as an
    orchestrator stops a pod, or stopped with Ctrl-C and, while its shutdown waits on the
    database, Ctrl-C again. SIGTERM still ends it, with status 0: its shutdown gives up on
    the database after its store timeouts, spools what it could not store, and drops the
    pool's connections (asyncpg's close waited 60 s on each, then SQLAlchemy logged a
    traceback). The second Ctrl-C ends it at once, status 130, saying so (uvicorn's own let
    the shutdown run on). Either way the next gateway stores all N rows, once each."""
    slug = ending.lower().replace(" ", "_").replace("-", "_")
    url = new_database(postgres, f"hung_{slug}_{int(with_redis)}", migrated=True)
    proxy = FreezeProxy(postgres.port)
    env = gateway_env(tmp_path, simulator, proxy.url(url),
                      redis_server.url if with_redis else None)
    port, log = free_port(), tmp_path / "serve.log"
    base = f"http://127.0.0.1:{port}"
    first = serve_process(env, port, log=log)
    second = None
    try:
        warm = calls(base, f"warm-{slug}-{with_redis}", 5)
        assert sorted(stored(url, warm)) == sorted(warm)
        proxy.freeze()
        ids = calls(base, f"hung-{slug}-{with_redis}", 60 if ending == "SIGKILL" else 30)
        if ending == "Ctrl-C twice":
            first.send_signal(signal.SIGINT)
            until(lambda: "Waiting for application shutdown" in log.read_text())
            first.send_signal(signal.SIGINT)  # the shutdown is waiting on the hung database
            assert first.wait(timeout=5) == FORCED_EXIT_STATUS, log.read_text()
            assert FORCED_EXIT_MESSAGE.decode().strip() in log.read_text()
            assert "Application shutdown complete" not in log.read_text()
        elif ending == "SIGKILL":
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        else:
            first.send_signal(signal.SIGTERM)
            try:
                status = first.wait(timeout=90)
            except subprocess.TimeoutExpired:
                first.kill()
                first.wait()
                pytest.fail(f"SIGTERM with Postgres hung: no exit in 90 s\n{log.read_text()}")
            assert status == 0, log.read_text()
            assert "Exception closing connection" not in log.read_text()
        proxy.drop()
        proxy.thaw()
        if ending != "SIGTERM":
            assert not set(stored(url, ids, timeout_s=0)), "the rows must still be unstored"
        second = serve_process(env, port, log=log)
        found = stored(url, ids | warm)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
        proxy.close()
    assert sorted(found) == sorted(ids | warm)  # all N, none twice

# ---- item 19: spools that cannot be written, reported at start ------------------------------


@pytest.mark.parametrize("trouble", ["spool-dir-unwritable", "redis-down", "both"])
def test_spool_trouble_is_reported_at_start(
        trouble: str, postgres: PrivatePostgres, simulator: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """A spool directory that cannot be created and a Redis that does not answer are in
    /readyz (with the OS's reason) and spool_up gauges from the start, logged, never a
    refusal; rows still reach a healthy Postgres."""
    url = new_database(postgres, f"spool_{trouble.replace('-', '_')}", migrated=True)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the spool directory's parent should be")
    bad_dir = trouble in ("spool-dir-unwritable", "both")
    redis_down = trouble in ("redis-down", "both")
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings = settings_for(tmp_path, url, dead_redis if redis_down else None,
                            spool_dir=blocker / "spool" if bad_dir else None)
    with caplog.at_level(logging.INFO), gateway(settings, simulator) as (base, writer):
        spools = readyz(base)["calllog"]["spools"]
        ids = calls(base, f"spool-{trouble}", 9)
        found = stored(url, ids)
        samples = wait_for(base, MASTER_KEY, lambda s: (
            "switchboard_calllog_spool_up", frozenset({("spool", "file")})) in s)
        assert value(samples, "switchboard_calllog_store_up") == 1
        assert writer.stats.dropped == 0
    assert sorted(found) == sorted(ids)
    file_up = value(samples, "switchboard_calllog_spool_up", spool="file")
    if bad_dir:
        assert spools["file"]["up"] is False and spools["file"]["reason"] == "ENOTDIR"
        assert "Not a directory" in spools["file"]["detail"]
        assert file_up == 0
        assert "Not a directory" in caplog.text and "ENOTDIR" in caplog.text
    else:
        assert spools["file"]["up"] is True and file_up == 1
    if redis_down:
        assert spools["redis"]["up"] is False and spools["redis"]["reason"] == "unavailable"
        assert value(samples, "switchboard_calllog_spool_up", spool="redis") == 0
        assert "Redis unavailable" in caplog.text
    else:
        assert "redis" not in spools


# ---- item 20: warnings that do not flood ---------------------------------------------------


def _record(i: int) -> CallRecord:
    return CallRecord(id=f"warn-{i:04d}", endpoint="/v1/chat/completions", caller="master",
                      public_model="chat")


def _spooled_past(writer: CallLogWriter, count: int) -> bool:
    return writer.stats.file_spooled > count


async def eventually(check: Callable[[], bool], *, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if check():
            return
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def test_a_running_writer_warns_once_while_redis_is_down(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Redis stopped and the database unreachable, 40 batches one after another: one WARNING
    for Redis and one for the store, not one per batch; Redis coming back is one INFO line."""
    redis = PrivateRedis()
    redis.start()
    client = RedisPools.open(redis.url).calllog
    redis.stop()
    engine = make_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/none")
    writer = CallLogWriter(
        store=PostgresStore(engine), file_spool=FileSpool(tmp_path / "spool"),
        spool=RedisSpool(client, consumer="warn-test"), feed=LiveFeed(client),
        flush_interval_s=0.01, retry_s=0.0, strict=True)  # retry_s 0: every batch tries both

    def lines(level: int, words: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "switchboard.calllog"
                and r.levelno == level and words in r.getMessage()]

    try:
        with caplog.at_level(logging.INFO, logger="switchboard.calllog"):
            await writer.start()
            for i in range(40):  # each record its own batch: submit, wait until spooled
                writer.submit(_record(i))
                await eventually(functools.partial(_spooled_past, writer, i))
            assert writer.stats.spool_failures >= 40 and writer.stats.dropped == 0
            assert len(lines(logging.WARNING, "Redis")) == 1
            assert len(lines(logging.WARNING, "call store")) == 1
            redis.start()
            writer.submit(_record(40))
            await eventually(lambda: bool(lines(logging.INFO, "Redis answers again")))
    finally:
        await writer.aclose(timeout_s=2)
        await client.aclose()
        await engine.dispose()
        redis.stop()
    back = lines(logging.INFO, "Redis answers again")
    assert len(back) == 1 and "not logged" in back[0]
    assert len(lines(logging.WARNING, "Redis")) == 1
