"""Every call logged, nothing lost: a running gateway against real Postgres, Redis and SQLite,
with the database and Redis stopped and the gateway killed mid-way."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pydantic import SecretStr
from sqlalchemy import text

from app.calllog.writer import CallLogWriter
from app.config import parse_config
from app.db.engine import make_engine
from app.main import create_app
from app.settings import Settings
from tests.api.conftest import MASTER_KEY, sim_config
from tests.calllog.servers import (
    SWITCHBOARD,
    PrivatePostgres,
    PrivateRedis,
    serve_process,
    writer_of,
)
from tests.servers import free_port, serve


async def _rows(url: str, ids: set[str] | None = None) -> list[dict[str, Any]]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text(
                "SELECT id, request_id, status, public_model, provider, prompt_tokens, "
                "completion_tokens, cost_usd FROM calls"))
            rows = [dict(r._mapping) for r in result]
    finally:
        await engine.dispose()
    return [r for r in rows if ids is None or r["request_id"] in ids]


def wait_rows(url: str, ids: set[str], *, timeout_s: float = 60) -> list[dict[str, Any]]:
    """Poll the database until a row of every request id is there (or time out); returns those
    rows."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = asyncio.run(_rows(url, ids))
        if len({r["request_id"] for r in rows}) == len(ids) or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


@contextmanager
def logged_gateway(settings: Settings, simulator: str) -> Iterator[tuple[str, CallLogWriter]]:
    lane = create_app(settings, config=parse_config(sim_config(simulator), {}),
                      strict_telemetry=True)
    with serve(lane) as url:
        yield url, writer_of(lane)


def chat(client: openai.OpenAI, request_id: str) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": f"log me {request_id}"}],
        extra_headers={"x-request-id": request_id})


def settings_for(tmp_path: Path, database_url: str, redis_url: str | None) -> Settings:
    return Settings(master_key=SecretStr(MASTER_KEY), database_url=database_url,
                    redis_url=redis_url, spool_dir=tmp_path / "spool")


@pytest.mark.parametrize("backend", ["postgres-redis", "sqlite"])
def test_n_requests_give_n_matching_rows(backend: str, postgres: PrivatePostgres,
                                         redis_server: PrivateRedis, simulator: str,
                                         tmp_path: Path) -> None:
    """Each response's id, tokens and cost are in exactly one row, with Postgres or SQLite."""
    if backend == "sqlite":
        url, redis_url = f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}", None
    else:
        url, redis_url = postgres.url, redis_server.url
    settings = settings_for(tmp_path, url, redis_url)
    with logged_gateway(settings, simulator) as (gateway, writer), \
            openai.OpenAI(base_url=gateway + "/v1", api_key=MASTER_KEY, max_retries=0) as client:
        answers = {}
        for i in range(40):
            raw = chat(client, f"{backend}-n-{i}")
            answers[raw.headers["x-request-id"]] = (raw.parse(), raw.headers)
        bad = httpx.post(gateway + "/v1/chat/completions", json={"model": "chat"},
                         headers={"Authorization": f"Bearer {MASTER_KEY}",
                                  "x-request-id": f"{backend}-bad"})
        assert bad.status_code == 400
        rows = wait_rows(url, {*answers, f"{backend}-bad"})
        assert writer.stats.dropped == 0
        status = httpx.get(gateway + "/admin/calllog",
                           headers={"Authorization": f"Bearer {MASTER_KEY}"}).json()
        assert status["dropped"] == 0 and status["stored"] == 41
    by_id = {r["request_id"]: r for r in rows}
    assert len(rows) == len(by_id) == 41
    assert by_id[f"{backend}-bad"]["status"] == "error"
    for request_id, (completion, headers) in answers.items():
        row = by_id[request_id]
        assert row["status"] == "ok" and row["provider"] == "sim"
        assert row["prompt_tokens"] == completion.usage.prompt_tokens
        assert row["completion_tokens"] == completion.usage.completion_tokens
        assert float(row["cost_usd"]) == pytest.approx(float(headers["x-switchboard-cost-usd"]))


def test_postgres_outage_loses_and_duplicates_nothing(postgres: PrivatePostgres,
                                                      redis_server: PrivateRedis,
                                                      simulator: str, tmp_path: Path) -> None:
    """Postgres stopped mid-load: requests keep succeeding and every row lands once after."""
    settings = settings_for(tmp_path, postgres.url, redis_server.url)
    ids: set[str] = set()
    with logged_gateway(settings, simulator) as (gateway, writer), \
            openai.OpenAI(base_url=gateway + "/v1", api_key=MASTER_KEY, max_retries=0) as client:
        try:
            for phase in ("before", "during", "after"):
                if phase == "during":
                    postgres.stop()
                for i in range(60):
                    assert chat(client, f"pg-{phase}-{i}").status_code == 200
                    ids.add(f"pg-{phase}-{i}")
                if phase == "during":
                    time.sleep(1.5)  # let the writer hit the outage and spool
                    assert writer.stats.store_failures > 0
                    postgres.start()
        finally:
            postgres.start() if not _pg_up(postgres) else None
        rows = wait_rows(postgres.url, ids)
        assert writer.stats.dropped == 0
    assert len(rows) == len({r["request_id"] for r in rows}) == len(ids)


def _pg_up(server: PrivatePostgres) -> bool:
    return subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", str(server.port)],
                          capture_output=True).returncode == 0


def test_redis_down_still_writes_postgres(postgres: PrivatePostgres, simulator: str,
                                          tmp_path: Path) -> None:
    """With Redis stopped, records go straight to Postgres."""
    redis_server = PrivateRedis()
    redis_server.start()
    settings = settings_for(tmp_path, postgres.url, redis_server.url)
    with logged_gateway(settings, simulator) as (gateway, writer), \
            openai.OpenAI(base_url=gateway + "/v1", api_key=MASTER_KEY, max_retries=0) as client:
        redis_server.stop()
        ids = {f"noredis-{i}" for i in range(30)}
        for request_id in sorted(ids):
            assert chat(client, request_id).status_code == 200
        rows = wait_rows(postgres.url, ids)
        # Redis noticed down (the live feed or the spool; after a failure it is left alone
        # for a second), nothing lost.
        assert writer.stats.spool_failures + writer.stats.feed_failures > 0
        assert writer.stats.dropped == 0
    assert len(rows) == len(ids)


@pytest.mark.parametrize("with_redis", [True, False])
def test_kill_9_with_records_spooled_replays_them(with_redis: bool, postgres: PrivatePostgres,
                                                  redis_server: PrivateRedis, simulator: str,
                                                  tmp_path: Path) -> None:
    """Records spooled (Redis stream, or the local file) when the gateway is killed with
    SIGKILL are written by the next gateway to start."""
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "providers:\n  sim: {type: openai, base_url: '" + simulator + "/v1'}\n"
        "models:\n  chat: {targets: [{provider: sim, model: gpt-4o-mini}]}\n"
        "calllog: {claim_idle_s: 1}\n")
    env = {**os.environ, "SWITCHBOARD_CONFIG": str(config),
           "SWITCHBOARD_DATABASE_URL": postgres.url,
           "SWITCHBOARD_SPOOL_DIR": str(tmp_path / "spool"),
           "SWITCHBOARD_MASTER_KEY": MASTER_KEY}
    if with_redis:
        env["SWITCHBOARD_REDIS_URL"] = redis_server.url
    port = free_port()
    first = serve_process(env, port, log=tmp_path / "gateway.log")
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=MASTER_KEY,
                           max_retries=0)
    ids = {f"k9-{with_redis}-{i}" for i in range(25)}
    try:
        postgres.stop()
        for request_id in sorted(ids):
            assert chat(client, request_id).status_code == 200
        time.sleep(1.0)  # the writer spools them (Redis, or the file after a failed write)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        client.close()
        postgres.start()
    assert not asyncio.run(_rows(postgres.url, ids)), "rows must not have reached Postgres yet"
    second = serve_process(env, port, log=tmp_path / "gateway.log")
    try:
        rows = wait_rows(postgres.url, ids)
    finally:
        second.terminate()
        second.wait(timeout=30)
    assert len(rows) == len({r["request_id"] for r in rows}) == len(ids)


def test_unmigrated_postgres_is_refused_clearly(postgres: PrivatePostgres, tmp_path: Path) -> None:
    """Serving against a Postgres without the schema exits with the command that fixes it."""
    subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(postgres.port), "-U", "postgres",
                    "-c", "CREATE DATABASE empty_db"], check=True, capture_output=True)
    url = postgres.url.rsplit("/", 1)[0] + "/empty_db"
    env = {**os.environ, "SWITCHBOARD_DATABASE_URL": url,
           "SWITCHBOARD_SPOOL_DIR": str(tmp_path / "spool")}
    result = subprocess.run([SWITCHBOARD, "serve", "--port", str(free_port())], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "switchboard db upgrade" in result.stderr


def test_sigterm_flushes_buffered_records(simulator: str, tmp_path: Path) -> None:
    """Records still buffered when the gateway gets SIGTERM are written before it exits."""
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "providers:\n  sim: {type: openai, base_url: '" + simulator + "/v1'}\n"
        "models:\n  chat: {targets: [{provider: sim, model: gpt-4o-mini}]}\n"
        "calllog: {flush_interval_s: 600, batch_max: 1000}\n")  # nothing flushes on its own
    url = f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}"
    env = {**os.environ, "SWITCHBOARD_CONFIG": str(config), "SWITCHBOARD_DATABASE_URL": url,
           "SWITCHBOARD_SPOOL_DIR": str(tmp_path / "spool"), "SWITCHBOARD_MASTER_KEY": MASTER_KEY}
    port = free_port()
    proc = serve_process(env, port, log=tmp_path / "gateway.log")
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=MASTER_KEY,
                           max_retries=0)
    ids = {f"term-{i}" for i in range(20)}
    with client:
        for request_id in sorted(ids):
            assert chat(client, request_id).status_code == 200
    assert not asyncio.run(_rows(url, ids)), "nothing may be flushed before the signal"
    proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells it.
    assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    assert {r["request_id"] for r in asyncio.run(_rows(url, ids))} == ids
