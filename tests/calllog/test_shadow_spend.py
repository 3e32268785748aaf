"""Shadow copies are the gateway's spend, not their caller's: through a running gateway with a
keyed caller, a budget and a shadow variant on a pricier target, the budget reconcile leaves the
key admitted, and the spend ledger, the call hours by key and team, and the Redis key and team
day counters hold the originals only, while the copies still count under their model. And the
Redis model counters count a prompt template's 404 under its (served) model, an unknown model's
under ``-``."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import text

from app.config import parse_config
from app.db.engine import make_engine
from app.db.migrate import upgrade
from app.main import create_app
from tests.api.conftest import MASTER_KEY, sim_config
from tests.calllog.servers import PrivateRedis
from tests.calllog.test_end_to_end import settings_for
from tests.servers import serve

BUDGET_USD = 0.05
"""A day's budget of the key: one shadow copy (about $0.2 at ``PRICES``) spends it four times
over, the originals (about $0.00002 each) never."""
PRICES = {"cheap-model": {"input": 1.0, "output": 1.0},
          "pricey-model": {"input": 10_000.0, "output": 10_000.0}}  # the most a price may be
ORIGINALS = 3


def config(simulator: str) -> dict[str, Any]:
    raw = sim_config(simulator, chat={"targets": [{"provider": "sim", "model": "cheap-model"}]})
    raw["pricing"] = PRICES
    raw["experiments"] = {"try-pricey": {"model": "chat", "variants": {
        "control": {"targets": [{"provider": "sim", "model": "cheap-model"}]},
        "pricey": {"shadow": True, "sample": 1.0,
                   "targets": [{"provider": "sim", "model": "pricey-model"}]}}}}
    raw["rate_limits"] = {"reconcile_interval_s": 0.2}
    return raw


async def _select(url: str, sql: str) -> list[dict[str, Any]]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(text(sql))]
    finally:
        await engine.dispose()


def select(url: str, sql: str) -> list[dict[str, Any]]:
    return asyncio.run(_select(url, sql))


def ask(http: httpx.Client, key: str, **body: Any) -> httpx.Response:
    return http.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                     json={"model": "chat", "messages": [{"role": "user", "content": "hi"}],
                           "max_tokens": 8, **body})


def wait_calls(url: str, key_id: str, count: int) -> list[dict[str, Any]]:
    """The key's stored call rows, once there are ``count`` (20 s at most)."""
    deadline = time.monotonic() + 20
    while True:
        rows = select(url, f"SELECT id, shadow_of, cost_usd, team_id FROM calls "
                           f"WHERE key_id = '{key_id}'")
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


@pytest.mark.parametrize("backend", ["postgres-redis", "sqlite"])
def test_a_keys_shadow_copies_charge_no_budget_and_count_under_no_key(
        backend: str, pg_database: str, redis_server: PrivateRedis, simulator: str,
        tmp_path: Path) -> None:
    """A keyed caller with a day budget: its calls' shadow copies cost many times the budget,
    yet after the reconcile the key is still admitted; the ledger and the call hours by key and
    team hold only the originals, the call hours by model the copies too; the Redis key and team
    counters count only the originals (the model counter all of them)."""
    if backend == "sqlite":
        url, redis_url = f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}", None
    else:
        url, redis_url = pg_database, redis_server.url
        asyncio.run(upgrade(url))
    app = create_app(settings_for(tmp_path, url, redis_url),
                     config=parse_config(config(simulator), {}), strict_telemetry=True)
    with serve(app) as gateway, httpx.Client(base_url=gateway, timeout=30, headers={
            "Authorization": f"Bearer {MASTER_KEY}"}) as http:
        team = http.post("/admin/teams", json={"name": "search"}).json()
        created = http.post("/admin/keys", json={
            "name": "bot", "team_id": team["id"], "budget_usd": BUDGET_USD,
            "budget_period": "day"}).json()
        key, key_id = created["key"], created["id"]
        for _ in range(ORIGINALS):
            answer = ask(http, key)
            assert answer.status_code == 200, answer.text
        rows = wait_calls(url, key_id, 2 * ORIGINALS)
        copies = [r for r in rows if r["shadow_of"] is not None]
        assert len(copies) == ORIGINALS, rows
        assert all(float(r["cost_usd"]) > BUDGET_USD for r in copies)  # each alone spends it
        assert {r["team_id"] for r in rows} == {team["id"]}  # a copy keeps its ids, to trace it
        time.sleep(1.0)  # five reconciles (every 0.2 s): each would raise the key past its budget
        answer = ask(http, key)
        assert answer.status_code == 200, answer.text  # was 429 insufficient_quota
        rows = wait_calls(url, key_id, 2 * ORIGINALS + 2)
        originals = [r for r in rows if r["shadow_of"] is None]
        copies = [r for r in rows if r["shadow_of"] is not None]
        spent = sum(float(r["cost_usd"]) for r in originals)

        ledger = select(url, "SELECT key_id, team_id, cost_usd FROM spend_days")
        assert [(r["key_id"], r["team_id"]) for r in ledger] == [(key_id, team["id"])]
        assert float(ledger[0]["cost_usd"]) == pytest.approx(spent, abs=1e-9)
        hours = select(url, "SELECT key_id, team_id, public_model, requests, cost_usd "
                            "FROM call_hours WHERE public_model = 'chat'")
        by_key = {(r["key_id"], r["team_id"]): r for r in hours}
        assert by_key[(key_id, team["id"])]["requests"] == len(originals)
        assert float(by_key[(key_id, team["id"])]["cost_usd"]) == pytest.approx(spent, abs=1e-9)
        assert by_key[("", "")]["requests"] == len(copies)
        assert sum(r["requests"] for r in hours) == len(rows)  # by model: every call

        keys = {r["group"]: r for r in http.get("/admin/spend", params={"by": "key"}).json()[
            "data"]}
        assert keys[key_id]["requests"] == len(originals)
        assert keys[key_id]["cost_usd"] == pytest.approx(spent, abs=1e-9)
        models = {r["group"]: r for r in http.get("/admin/spend", params={"by": "model"}).json()[
            "data"]}
        assert models["chat"]["requests"] == len(rows)
    if redis_url is None:
        return
    day = datetime.now(UTC).date().isoformat()  # (a test run across midnight UTC: rerun it)
    with redis.Redis.from_url(redis_url) as client:  # every counter is added by now: shut down

        def counted(kind: str, name: str) -> int:
            return int(client.hget(f"switchboard:usage:{day}:{kind}:{name}", "requests") or 0)

        assert counted("key", key_id) == counted("team", team["id"]) == len(originals)
        stored = select(url, "SELECT count(*) AS n FROM calls WHERE public_model = 'chat'")
        assert counted("model", "chat") == stored[0]["n"]


def test_a_prompt_templates_404_counts_under_its_model_in_redis(
        redis_server: PrivateRedis, simulator: str, tmp_path: Path) -> None:
    """A call to a served model naming an unknown prompt template (404 ``prompt_not_found``)
    counts under that model in the Redis day counters, as its row does; calls to models that do
    not exist count under ``-``, there and in the call hours and spend by model alike (one row
    and group, whatever names were sent), while their rows keep the names."""
    app = create_app(settings_for(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}",
                                  redis_server.url),
                     config=parse_config(sim_config(simulator), {}), strict_telemetry=True)
    with serve(app) as gateway, httpx.Client(base_url=gateway, timeout=30) as http:
        missing = ask(http, MASTER_KEY, messages=[], prompt={"id": "no-such-template"})
        assert missing.status_code == 404, missing.text
        assert missing.json()["error"]["code"] == "prompt_not_found"
        for model in ("made-up", "made-up-too"):
            unknown = ask(http, MASTER_KEY, model=model)
            assert unknown.status_code == 404, unknown.text
            assert unknown.json()["error"]["code"] == "model_not_found"
        deadline = time.monotonic() + 20
        while len(select(f"sqlite:///{tmp_path / 'calls.db'}", "SELECT id FROM calls")) < 3 \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        models = http.get("/admin/spend", params={"by": "model"},
                          headers={"Authorization": f"Bearer {MASTER_KEY}"}).json()["data"]
        assert {r["group"]: r["requests"] for r in models} == {"chat": 1, "-": 2}
    day = datetime.now(UTC).date().isoformat()
    with redis.Redis.from_url(redis_server.url) as client:  # published by now: shut down
        chat = client.hgetall(f"switchboard:usage:{day}:model:chat")
        dash = client.hgetall(f"switchboard:usage:{day}:model:-")
    assert (int(chat[b"requests"]), int(chat[b"errors"])) == (1, 1)
    assert (int(dash[b"requests"]), int(dash[b"errors"])) == (2, 2)
    rows = select(f"sqlite:///{tmp_path / 'calls.db'}",
                  "SELECT public_model, http_status FROM calls ORDER BY public_model")
    assert [(r["public_model"], r["http_status"]) for r in rows] == [
        ("chat", 404), ("made-up", 404), ("made-up-too", 404)]
    hours = select(f"sqlite:///{tmp_path / 'calls.db'}",
                   "SELECT public_model, requests FROM call_hours ORDER BY public_model")
    assert [(r["public_model"], r["requests"]) for r in hours] == [("-", 2), ("chat", 1)]
