"""An experiment's report counts the gateway's own refusals (no attempt made) apart from its
variants' metrics: over real rows on SQLite and Postgres, and end to end through a gateway."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app import errors, experiments
from app.calllog.cli import experiments as experiments_cli
from app.config import parse_config
from app.db.engine import make_engine
from app.db.migrate import upgrade
from app.db.models import Call, Feedback
from app.main import create_app
from tests.api.conftest import MASTER_KEY, sim_config
from tests.calllog.test_end_to_end import settings_for
from tests.servers import serve

ATTEMPT_OK = [{"provider": "sim", "model": "m", "status": 200, "error_type": None,
               "duration_ms": 10.0}]
ATTEMPT_503 = [{"provider": "sim", "model": "m", "status": 503, "error_type": "api_error",
                "duration_ms": 10.0}]


def call(call_id: str, variant: str, *, status: str = "ok", http_status: int = 200,
         attempts: list[dict[str, Any]] | None = None, latency_ms: float = 20.0) -> Call:
    """A row of experiment ``ab``; ``attempts`` default: one that succeeded when ``ok``."""
    at = datetime.now(UTC) - timedelta(minutes=1)
    answered = status == "ok"
    return Call(id=call_id, created_at=at, finished_at=at, caller="key",
                endpoint="/v1/chat/completions", public_model="chat",
                provider="sim" if answered else None, target_model="m" if answered else None,
                attempts=ATTEMPT_OK if attempts is None else attempts, status=status,
                http_status=http_status, stream=False, latency_ms=latency_ms,
                prompt_tokens=3 if answered else None, completion_tokens=5 if answered else None,
                tokens_estimated=False, cost_usd=Decimal("0.001") if answered else None,
                experiment="ab", variant=variant, key_id="key_1")


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated call log with no calls."""
    await upgrade(database_url)
    engine = make_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(delete(Call))
        await conn.execute(delete(Feedback))
    yield engine
    await engine.dispose()


async def test_refusals_before_any_provider_are_counted_apart(engine: AsyncEngine) -> None:
    """A variant's error rate and latency count only calls that reached a provider (a failed
    attempt included); calls refused before one (a budget 429, a validation 400) are its
    refused_before_provider, and calls still counts them all."""
    rows = [call(f"c-ok-{i}", "control", latency_ms=20.0) for i in range(8)]
    rows += [call("c-503", "control", status="error", http_status=503, attempts=ATTEMPT_503,
                  latency_ms=500.0)]
    rows += [call(f"c-429-{i}", "control", status="error", http_status=429, attempts=[],
                  latency_ms=1.0) for i in range(3)]
    rows += [call("c-400", "control", status="error", http_status=400, attempts=[],
                  latency_ms=1.0)]
    rows += [call(f"v-ok-{i}", "candidate") for i in range(4)]
    async with AsyncSession(engine) as session:
        session.add_all(rows)
        await session.commit()
    report = await experiments.report(engine, "ab", ["control", "candidate"], control="control")
    control, candidate = report["variants"]["control"], report["variants"]["candidate"]
    assert control["error_rate"]["n"] == 9
    assert control["error_rate"]["mean"] == pytest.approx(1 / 9)
    assert control["calls"] == 13 and control["refused_before_provider"] == 4
    assert control["latency_ms"]["n"] == 9 and control["latency_ms"]["p50"] == 20.0
    assert control["latency_ms"]["p95"] == 500.0
    assert (candidate["calls"], candidate["refused_before_provider"]) == (4, 0)
    assert candidate["error_rate"]["mean"] == 0.0


async def test_failed_calls_that_reached_a_provider_count_in_latency_tokens_and_cost(
        engine: AsyncEngine) -> None:
    """A failed call that reached a provider counts in latency (the time it took to fail) and
    time to first token (a stream cut after it); one billed (a stream cut after output) in
    tokens and cost too; one nothing billed in neither (not as free); refusal rate and JSON
    validity stay of answered calls."""
    rows = [call(f"ok-{i}", "control", latency_ms=20.0) for i in range(4)]
    timeout = call("timeout", "control", status="error", http_status=504,
                   attempts=ATTEMPT_503, latency_ms=9000.0)
    cut = call("cut", "control", status="error", http_status=502, attempts=ATTEMPT_503,
               latency_ms=700.0)
    cut.ttft_ms, cut.prompt_tokens, cut.completion_tokens = 50.0, 3, 40
    cut.cost_usd = Decimal("0.009")
    for row in rows:
        row.refusal = False
    async with AsyncSession(engine) as session:
        session.add_all([*rows, timeout, cut])
        await session.commit()
    arm = (await experiments.report(engine, "ab", ["control"], control="control")
           )["variants"]["control"]
    assert arm["error_rate"]["n"] == 6
    assert (arm["latency_ms"]["n"], arm["latency_ms"]["p95"]) == (6, 9000.0)
    assert arm["ttft_ms"]["p50"] == 50.0
    assert arm["completion_tokens"]["n"] == 5
    assert arm["completion_tokens"]["mean"] == pytest.approx((4 * 5 + 40) / 5)
    assert arm["cost_usd"]["n"] == 5
    assert arm["cost_usd"]["mean"] == pytest.approx((4 * 0.001 + 0.009) / 5)
    assert arm["refusal_rate"]["n"] == 4


async def test_an_ended_experiment_is_reported_from_its_calls(engine: AsyncEngine) -> None:
    """An experiment no longer configured is reported from the call log: its variants are
    those of its calls (in the order of their first call), marked ended, with no control
    unless one is named; a control that is none of them is a 400, an experiment with no
    calls a 404."""
    first = call("first", "candidate")
    first.created_at -= timedelta(minutes=5)
    async with AsyncSession(engine) as session:
        session.add_all([first, call("later", "control"), call("again", "candidate")])
        await session.commit()
    ended = await experiments.report_of(engine, "ab", None)
    assert (ended["ended"], ended["control"]) == (True, None)
    assert list(ended["variants"]) == ["candidate", "control"]
    assert ended["variants"]["candidate"]["calls"] == 2
    assert ended["variants"]["control"]["differs_from_control"] is None
    named = await experiments.report_of(engine, "ab", None, control="control")
    assert named["control"] == "control"
    assert named["variants"]["candidate"]["differs_from_control"] is not None
    configured = await experiments.report_of(engine, "ab", ["control", "candidate"])
    assert (configured["ended"], configured["control"]) == (False, "control")
    with pytest.raises(errors.InvalidRequest) as bad:
        await experiments.report_of(engine, "ab", None, control="nope")
    assert bad.value.param == "control"
    with pytest.raises(errors.NotFound):
        await experiments.report_of(engine, "never", None)


async def test_a_call_scored_many_times_is_one_sample(engine: AsyncEngine) -> None:
    """Feedback scores count once a call, at the mean of the call's scores: a client that
    rates one call many times does not outweigh the other calls."""
    rows = [call(f"c-{i}", "control") for i in range(3)]
    at = datetime.now(UTC)
    scores = [("c-0", 1.0)] * 50 + [("c-0", 0.0), ("c-1", 0.0), ("c-2", 0.5)]
    feedback = [Feedback(id=f"fb-{i}", call_id=call_id, created_at=at + timedelta(seconds=i),
                         score=score) for i, (call_id, score) in enumerate(scores)]
    async with AsyncSession(engine) as session:
        session.add_all([*rows, *feedback])
        await session.commit()
    report = await experiments.report(engine, "ab", ["control"], control="control")
    scored = report["variants"]["control"]["feedback_score"]
    assert scored["n"] == 3
    assert scored["mean"] == pytest.approx((50 / 51 + 0.0 + 0.5) / 3)


async def test_scores_are_judged_on_the_scale_they_span(engine: AsyncEngine) -> None:
    """Thirty calls each rated 0 and 1: every call's mean is 0.5, but the scale is the one the
    scores span (0 to 1), not "unknown" as thirty equal means alone would make it."""
    rows = [call(f"c-{i}", "control") for i in range(30)]
    at = datetime.now(UTC)
    feedback = [Feedback(id=f"fb-{row.id}-{score}", call_id=row.id, created_at=at, score=score)
                for row in rows for score in (0.0, 1.0)]
    async with AsyncSession(engine) as session:
        session.add_all([*rows, *feedback])
        await session.commit()
    scored = (await experiments.report(engine, "ab", ["control"], control="control"))[
        "variants"]["control"]["feedback_score"]
    assert (scored["n"], scored["mean"]) == (30, 0.5)
    low, high = scored["ci95"]
    assert 0.0 <= low < 0.5 < high <= 1.0


def ab_config(simulator: str, **sticky: str) -> dict[str, Any]:
    """The simulator's config with experiment ``ab`` splitting ``chat`` between two variants
    of one target (``sticky``: the experiment's ``sticky``, when given)."""
    raw = sim_config(simulator)
    raw["experiments"] = {"ab": {"model": "chat", **sticky, "variants": {
        "control": {"targets": [{"provider": "sim", "model": "gpt-4o-mini"}]},
        "candidate": {"targets": [{"provider": "sim", "model": "gpt-4o-mini"}]}}}}
    return raw


def sqlite_app(tmp_path: Path, raw: dict[str, Any]) -> Any:
    """A gateway on ``raw`` whose call log is a SQLite file in ``tmp_path`` (the same file for
    every app made in one test)."""
    settings = settings_for(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}", None)
    return create_app(settings, config=parse_config(raw, {}), strict_telemetry=True)


def test_a_gateways_refusals_stay_out_of_the_error_rate(simulator: str, tmp_path: Path) -> None:
    """Through a gateway: calls refused at validation (a max_tokens past the cap, a bad
    deadline header) keep their variant (``sticky: user``, one user), and the report counts
    them as refused before any provider, not as the variant's errors; the CLI says so."""
    raw = ab_config(simulator)
    raw["models"]["chat"]["max_tokens_cap"] = 100
    lane = sqlite_app(tmp_path, raw)
    hi = [{"role": "user", "content": "hi"}]
    with serve(lane) as url, httpx.Client(base_url=url, timeout=30, headers={
            "Authorization": f"Bearer {MASTER_KEY}"}) as http:
        sent: list[tuple[dict[str, Any], dict[str, str], int]] = [
            ({"messages": hi}, {}, 200), ({"messages": hi}, {}, 200),
            ({"messages": hi, "max_tokens": 1000}, {}, 400),
            ({"messages": hi}, {"x-switchboard-deadline-s": "soon"}, 400)]
        for body, headers, status in sent:
            answer = http.post("/v1/chat/completions", headers=headers,
                               json={"model": "chat", "user": "one-user", **body})
            assert answer.status_code == status, answer.text
        deadline = time.monotonic() + 10
        while len(http.get("/admin/calls", params={"experiment": "ab"}).json()["data"]) \
                < len(sent):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        variants = http.get("/admin/experiments/ab").json()["variants"]
        printed = CliRunner().invoke(experiments_cli, [
            "report", "ab", "--url", url, "--key", MASTER_KEY], env={})
        # the name is one path segment: not another admin route, not a query
        odd = {name: CliRunner().invoke(experiments_cli, [
            "report", name, "--url", url, "--key", MASTER_KEY, "--json"], env={})
            for name in ("../keys", "ab?control=candidate", "a\x01b")}
    for name, result in odd.items():
        assert result.exit_code in (1, 2) and "404" in result.output, (name, result.output)
    # one user: every call on one variant
    (name, used), = [(n, v) for n, v in variants.items() if v["calls"]]
    assert (used["error_rate"]["n"], used["error_rate"]["mean"]) == (2, 0.0)
    assert (used["calls"], used["refused_before_provider"]) == (4, 2)
    assert printed.exit_code == 0, printed.output
    assert f"{name}: 4 calls (2 refused before any provider, not in the metrics)" in \
        printed.output


@pytest.mark.parametrize("asked", [{"max_tokens": 5}, {}], ids=["max_tokens", "default"])
def test_a_keys_rate_limit_refusal_counts_on_its_variant(simulator: str, tmp_path: Path,
                                                          asked: dict[str, Any]) -> None:
    """A key over its RPM limit is refused before any provider, on its variant (``sticky:
    key``), whether or not the request names ``max_tokens`` (with it, admission once decided
    before the call's route, and so its variant, was resolved: the refusal had no variant)."""
    lane = sqlite_app(tmp_path, ab_config(simulator, sticky="key"))
    with serve(lane) as url, httpx.Client(base_url=url, timeout=30, headers={
            "Authorization": f"Bearer {MASTER_KEY}"}) as http:
        made = http.post("/admin/keys", json={"name": "one-a-minute", "rpm": 1})
        assert made.status_code == 201, made.text
        key = {"Authorization": f"Bearer {made.json()['key']}"}
        for status in (200, 429):
            answer = http.post("/v1/chat/completions", headers=key, json={
                "model": "chat", "messages": [{"role": "user", "content": "hi"}], **asked})
            assert answer.status_code == status, answer.text
        deadline = time.monotonic() + 10
        while len(rows := http.get("/admin/calls", params={"experiment": "ab"}).json()["data"]) \
                < 2:
            assert time.monotonic() < deadline, rows
            time.sleep(0.05)
        variants = http.get("/admin/experiments/ab").json()["variants"]
    assert sorted(row["http_status"] for row in rows) == [200, 429]
    assert len({row["variant"] for row in rows}) == 1
    used = variants[rows[0]["variant"]]
    assert (used["calls"], used["refused_before_provider"]) == (2, 1)


def test_the_report_outlives_the_experiments_config(simulator: str, tmp_path: Path) -> None:
    """Ending an experiment (a config without it) keeps its report: the API and the CLI read
    it from the call log, say it ended, and compare with the control the reader names."""
    raw = ab_config(simulator, sticky="header")
    auth = {"Authorization": f"Bearer {MASTER_KEY}"}
    running = sqlite_app(tmp_path, raw)
    with serve(running) as url, httpx.Client(base_url=url, timeout=30, headers=auth) as http:
        for i in range(12):
            answer = http.post("/v1/chat/completions", headers={
                "x-switchboard-variant-key": f"k{i}"}, json={
                "model": "chat", "messages": [{"role": "user", "content": "hi"}]})
            assert answer.status_code == 200, answer.text
        deadline = time.monotonic() + 10
        while len(http.get("/admin/calls", params={"experiment": "ab"}).json()["data"]) < 12:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        before = http.get("/admin/experiments/ab").json()
    del raw["experiments"]
    ended = sqlite_app(tmp_path, raw)
    with serve(ended) as url, httpx.Client(base_url=url, timeout=30, headers=auth) as http:
        after = http.get("/admin/experiments/ab")
        named = http.get("/admin/experiments/ab", params={"control": "control"}).json()
        unknown = http.get("/admin/experiments/ab", params={"control": "c"})
        printed = CliRunner().invoke(experiments_cli, [
            "report", "ab", "--url", url, "--key", MASTER_KEY], env={})
    assert after.status_code == 200, after.text
    body = after.json()
    assert (before["ended"], body["ended"], body["control"]) == (False, True, None)
    assert {name: v["calls"] for name, v in body["variants"].items()} == {
        name: v["calls"] for name, v in before["variants"].items() if v["calls"]}
    assert named["control"] == "control"
    assert (unknown.status_code, unknown.json()["error"]["param"]) == (400, "control")
    assert printed.exit_code == 0, printed.output
    assert "experiment ab (ended: not in the config serving now" in printed.output
    assert "control: none, name one with --control" in printed.output


def test_an_empty_experiment_name_is_a_usage_error() -> None:
    """``experiments report ""`` names no experiment: a usage error (exit 2) saying so, before
    any gateway is asked (it read as a gateway without the call log API)."""
    for name in ("", "  "):
        result = CliRunner().invoke(experiments_cli, [
            "report", name, "--url", "http://127.0.0.1:9", "--key", MASTER_KEY], env={})
        assert result.exit_code == 2, result.output
        assert "an experiment's name is not empty" in result.output
        assert "cannot connect" not in result.output
