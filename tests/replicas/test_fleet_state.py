"""State that three ``switchboard serve`` replicas share, proven through a real nginx
(round-robin) with the openai SDK; one fleet (3 processes of this tree, a private Postgres, a
private redis-server) is started once for the module:

- a virtual key's 60 RPM limit holds across the fleet: a burst of 100 concurrent calls through
  nginx admits 60 +-1 (issue 9's bound), refuses the rest with 429 ``rate_limit_exceeded`` and a
  ``Retry-After``, and every call, refused or not, is exactly one ``calls`` row;
- a team's budget holds across the fleet: spent through nginx by two keys, it stops the team on
  every replica, overshooting by at most the calls in flight;
- a rewritten config file converges: each replica, asked directly, reports the version that
  ``app.pipeline.config_version`` computes for the new file and serves the model it adds;
- drift baselines are shared: once one replica has captured the baseline of a model, every
  replica's ``/admin/drift`` shows that baseline (the same ``captured_at``, as stored in
  ``drift_baselines``), including replicas that had not seen enough answers to capture their own.

Waits are polls with deadlines; nothing asserts on time.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import openai
import pytest
import yaml
from openai.types.chat import ChatCompletionMessageParam

from app.config import load_config
from app.pipeline import config_version
from tests.calllog import conftest as calllog
from tests.calllog.servers import PrivatePostgres, PrivateRedis
from tests.governance.conftest import governance_config
from tests.replicas.support import (
    MASTER_KEY,
    METRICS_KEY,
    Replica,
    run_nginx,
    tree_env,
    wait_for_rows,
)
from tests.servers import free_ports

postgres = calllog.postgres
"""A private, migrated Postgres for this module (keys, calls, drift baselines)."""
HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
BASELINE_SIZE = 10
"""Answers a replica needs to capture a drift baseline of its own (the config's minimum)."""


@dataclass
class Fleet:
    replicas: list[Replica]
    lb: str
    """nginx's base URL."""
    config: Path
    raw: dict[str, Any]
    """The config the replicas started with."""

    def by_upstream(self, upstream: str) -> Replica:
        """The replica nginx names in ``X-Upstream`` (the last one tried answered)."""
        port = int(upstream.split(", ")[-1].rsplit(":", 1)[1])
        return next(r for r in self.replicas if r.port == port)


@pytest.fixture(scope="module")
def redis_module() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, simulator: str, postgres: PrivatePostgres,
          redis_module: PrivateRedis) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet-state")
    # Three gateways, nginx, the simulator and the client threads share a small host: a limiter
    # round trip can take longer than the default timeout, which then admits (fail-open); as
    # in tests/governance, the limit's atomicity is under test, not the fail mode.
    raw = governance_config(simulator, redis_timeout_ms=1000)
    raw["models"]["watched"] = {"targets": [{"provider": "sim", "model": "gpt-4o-mini"}]}
    raw["drift"] = {"baseline_size": BASELINE_SIZE, "window": 10, "evaluate_every": 5,
                    "sync_interval_s": 0.2, "embedding": {"sample_rate": 0.0}}
    config = tmp / "gateway.yaml"
    config.write_text(yaml.safe_dump(raw))
    replicas = []
    ports = free_ports(3)
    for name, port in zip(("a", "b", "c"), ports, strict=True):
        env = tree_env({"SWITCHBOARD_MASTER_KEY": MASTER_KEY,
                        "SWITCHBOARD_METRICS_KEY": METRICS_KEY,
                        "SWITCHBOARD_CONFIG": str(config),
                        "SWITCHBOARD_CONFIG_POLL_S": "0.2",
                        "SWITCHBOARD_DATABASE_URL": postgres.url,
                        "SWITCHBOARD_REDIS_URL": redis_module.url,
                        "SWITCHBOARD_SPOOL_DIR": str(tmp / f"spool-{name}")})
        replicas.append(Replica(name, port, env, tmp / f"gateway-{name}.log"))
    try:
        for replica in replicas:
            replica.start()
        with run_nginx(tmp / "nginx", [f"127.0.0.1:{r.port}" for r in replicas]) as lb:
            yield Fleet(replicas, lb, config, raw)
    finally:
        statuses = {r.name: r.stop() for r in replicas}
        assert all(s in (0, None) for s in statuses.values()), statuses


def admin(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=30,
                        headers={"Authorization": f"Bearer {MASTER_KEY}"})


def sdk(url: str, key: str = MASTER_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)


@dataclass
class Answer:
    request_id: str
    status: int
    headers: Mapping[str, str]
    """The response's headers (case-insensitive)."""
    code: str | None = None


def test_a_60_rpm_key_holds_across_the_fleet_through_nginx(fleet: Fleet,
                                                           postgres: PrivatePostgres) -> None:
    with admin(fleet.lb) as client:
        created = client.post("/admin/keys", json={"name": "fleet-burst", "rpm": 60})
    assert created.status_code == 201, created.text
    key = created.json()["key"]

    def call(i: int) -> Answer:
        request_id = f"fleet-rpm-{i}-{uuid.uuid4().hex}"
        with sdk(fleet.lb, key) as client:
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model="chat", messages=HI, max_tokens=5,
                    extra_headers={"x-request-id": request_id})
            except openai.APIStatusError as exc:
                body = exc.body if isinstance(exc.body, dict) else {}
                return Answer(request_id, exc.status_code, exc.response.headers,
                              body.get("code"))
            assert raw.parse().choices[0].message.content
            return Answer(request_id, raw.status_code, raw.headers)

    with ThreadPoolExecutor(max_workers=32) as pool:  # 100 calls, 32 in flight at a time
        answers = list(pool.map(call, range(100)))
    statuses = Counter(a.status for a in answers)
    assert set(statuses) <= {200, 429}, statuses
    assert 59 <= statuses[200] <= 61, statuses  # issue 9: the limit +-1 across processes
    # the burst reached every replica (nginx round-robin), so the limit was held across them
    answered_by = Counter(fleet.by_upstream(a.headers["x-upstream"]).name for a in answers)
    assert set(answered_by) == {"a", "b", "c"}, answered_by
    print(f"60 RPM burst of 100 through nginx: {statuses[200]} admitted, {statuses[429]} "
          f"refused; answered by {dict(answered_by)}")
    refused = [a for a in answers if a.status == 429]
    assert {a.code for a in refused} == {"rate_limit_exceeded"}
    assert all(int(a.headers["retry-after"]) >= 1 for a in refused)
    assert {a.headers["x-ratelimit-limit-requests"] for a in refused} == {"60"}
    counts = wait_for_rows(postgres.url, [a.request_id for a in answers])
    wrong = {r: n for r, n in counts.items() if n != 1}
    assert not wrong, f"{len(wrong)} of 100 calls not logged exactly once: {wrong}"
    statuses_stored = asyncio.run(_stored_statuses(postgres.url, [a.request_id for a in answers]))
    assert statuses_stored == {a.request_id: a.status for a in answers}


def test_a_team_budget_holds_across_the_fleet_through_nginx(fleet: Fleet) -> None:
    """A team's $0.50 budget, spent through nginx by two keys across the three replicas, stops
    the team everywhere, overshooting by at most the calls in flight when it ran out."""
    with admin(fleet.lb) as client:
        team = client.post("/admin/teams", json={"name": "fleet-budget", "budget_usd": 0.5,
                                                 "budget_period": "month"})
        assert team.status_code == 201, team.text
        keys = []
        for i in range(2):
            created = client.post("/admin/keys", json={"name": f"fleet-budget-{i}",
                                                       "team_id": team.json()["id"]})
            assert created.status_code == 201, created.text
            keys.append(created.json()["key"])

    def call(i: int) -> tuple[int, float, str | None, str]:
        with httpx.Client(base_url=fleet.lb, timeout=60) as client:
            answer = client.post("/v1/chat/completions",
                                 headers={"Authorization": f"Bearer {keys[i % 2]}"},
                                 json={"model": "chat", "messages": HI, "max_tokens": 20})
        cost = float(answer.headers.get("x-switchboard-cost-usd", "0"))
        code = answer.json()["error"]["code"] if answer.status_code != 200 else None
        return answer.status_code, cost, code, answer.headers["x-upstream"]

    with ThreadPoolExecutor(max_workers=4) as pool:  # 4 calls in flight at a time
        answers = list(pool.map(call, range(80)))
    costs = [cost for status, cost, _, _ in answers if status == 200]
    refusals = {code for status, _, code, _ in answers if status == 429}
    assert refusals == {"insufficient_quota"}, Counter(a[0] for a in answers)
    assert {fleet.by_upstream(a[3]).name for a in answers} == {"a", "b", "c"}
    spent = sum(costs)
    overshoot = spent - 0.5
    print(f"team budget $0.50 across the fleet: {len(costs)} calls spent ${spent:.4f}, "
          f"overshoot ${max(overshoot, 0):.4f} (one call ${max(costs):.4f}, 4 in flight)")
    assert overshoot <= 4 * max(costs)  # at most the calls in flight when it ran out
    for replica in fleet.replicas:  # every replica refuses the team now, either key
        with sdk(replica.url, keys[1]) as openai_client, \
                pytest.raises(openai.RateLimitError) as caught:
            openai_client.chat.completions.create(model="chat", messages=HI)
        assert caught.value.code == "insufficient_quota", replica.name


async def _stored_statuses(database_url: str, request_ids: list[str]) -> dict[str, int]:
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        rows = await conn.fetch("SELECT request_id, http_status FROM calls "
                                "WHERE request_id = ANY($1)", request_ids)
    finally:
        await conn.close()
    return {r["request_id"]: r["http_status"] for r in rows}


def test_a_rewritten_config_converges_on_every_replica(fleet: Fleet) -> None:
    before = {r.name: _version(r) for r in fleet.replicas}
    assert len(set(before.values())) == 1, before  # one file, one version
    for replica in fleet.replicas:
        with sdk(replica.url) as client, pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="fresh", messages=HI)

    raw = {**fleet.raw, "models": {
        **fleet.raw["models"], "fresh": {"targets": [{"provider": "sim",
                                                     "model": "gpt-4o-mini"}]}}}
    staged = fleet.config.with_name("gateway.yaml.new")
    staged.write_text(yaml.safe_dump(raw))
    os.replace(staged, fleet.config)  # atomically, as a ConfigMap update swaps its file
    expected = config_version(load_config(fleet.config, {}))
    assert expected not in before.values()

    deadline = time.monotonic() + 60
    versions = before
    while set(versions.values()) != {expected}:
        assert time.monotonic() < deadline, f"not converged on {expected}: {versions}"
        time.sleep(0.2)
        versions = {r.name: _version(r) for r in fleet.replicas}
    for replica in fleet.replicas:  # each one serves the new model, on the new version
        with sdk(replica.url) as client:
            raw_answer = client.chat.completions.with_raw_response.create(
                model="fresh", messages=HI, max_tokens=5)
        assert raw_answer.headers["x-switchboard-config-version"] == expected, replica.name
        assert raw_answer.parse().choices[0].message.content
        with admin(replica.url) as client:
            status = client.get("/admin/config").json()
        assert status["models"]["fresh"] == ["sim/gpt-4o-mini"], replica.name
        assert status["last_error"] is None and status["restart_needed"] == [], status


def _version(replica: Replica) -> str:
    with admin(replica.url) as client:
        response = client.get("/admin/config")
    assert response.status_code == 200, response.text
    version: str = response.json()["version"]
    return version


def _watched(replica: Replica) -> dict[str, Any] | None:
    """``/admin/drift``'s entry for the ``watched`` model (None before its first answer)."""
    with admin(replica.url) as client:
        response = client.get("/admin/drift")
    assert response.status_code == 200, response.text
    return next((t for t in response.json()["targets"] if t["model"] == "watched"), None)


def _seen(entry: dict[str, Any] | None) -> int:
    """Answers a replica has counted towards its own baseline (all of them once it has one)."""
    if entry is None:
        return 0
    return BASELINE_SIZE if entry["baseline"] is not None else int(entry["capturing"])


def test_drift_baselines_are_shared_by_every_replica(fleet: Fleet,
                                                     postgres: PrivatePostgres) -> None:
    seen = dict.fromkeys((r.name for r in fleet.replicas), 0)
    with sdk(fleet.lb) as client:
        # One call at a time through nginx, each waited for in the replica that answered it,
        # until one replica holds a baseline: the others then hold fewer answers than a
        # baseline needs and can only have one by adopting the stored one.
        for i in range(4 * BASELINE_SIZE):
            raw = client.chat.completions.with_raw_response.create(
                model="watched", max_tokens=50,
                messages=[{"role": "user", "content": f"Question number {i}."}])
            assert raw.parse().choices[0].message.content
            replica = fleet.by_upstream(raw.headers["x-upstream"])
            seen[replica.name] += 1
            deadline = time.monotonic() + 30
            while _seen(entry := _watched(replica)) < min(seen[replica.name], BASELINE_SIZE):
                assert time.monotonic() < deadline, (replica.name, seen, entry)
                time.sleep(0.05)
            if entry is not None and entry["baseline"] is not None:
                captor = replica
                break
        else:
            raise AssertionError(f"no replica captured a baseline: {seen}")
    adopters = [r for r in fleet.replicas if seen[r.name] < BASELINE_SIZE]
    print(f"drift: {captor.name} captured the baseline; answers seen per replica {seen}")
    assert adopters, seen  # round-robin: when one reaches 10 the others hold 9 or fewer

    stored = asyncio.run(_stored_baseline(postgres.url))
    deadline = time.monotonic() + 60
    while True:
        entries = {r.name: _watched(r) for r in fleet.replicas}
        captured = {name: _epoch(e["baseline"]["captured_at"]) if e and e["baseline"] else None
                    for name, e in entries.items()}
        if stored is not None and all(c is not None and abs(c - stored) < 0.001
                                      for c in captured.values()):
            break
        assert time.monotonic() < deadline, (captor.name, seen, stored, entries)
        time.sleep(0.1)
        stored = asyncio.run(_stored_baseline(postgres.url))
    # one baseline on all three: the captor keeps its own float, the others read the stored
    # one back through a microsecond column; answers show microseconds
    values = [c for c in captured.values() if c is not None]
    assert max(values) - min(values) < 2e-6, captured
    assert all(e is not None and e["baseline"]["samples"] == BASELINE_SIZE
               for e in entries.values()), entries


def _epoch(stamp: str) -> float:
    """An answer's ISO 8601 time (``app.times.iso``) as epoch seconds."""
    return datetime.fromisoformat(stamp).timestamp()


async def _stored_baseline(database_url: str) -> float | None:
    """``captured_at`` (epoch seconds) of the stored length baseline of ``watched``."""
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        row = await conn.fetchrow("SELECT captured_at FROM drift_baselines "
                                  "WHERE model = 'watched' AND signal = 'length'")
    finally:
        await conn.close()
    return None if row is None else float(row["captured_at"].timestamp())
