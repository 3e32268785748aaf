"""The families of keys, limits and budgets: rejections by scope, the limiter's Redis failures by
outcome, and spend by team (bounded, never a key id)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from app.calllog.record import CallRecord, Status
from app.metrics.families import MAX_TEAMS, Metrics
from app.metrics.recorder import Recorder
from app.metrics.versions import VersionSlots
from tests.metrics.scrape import Samples, parse, value


def recorder() -> Recorder:
    return Recorder(Metrics(), models={"chat"})


def exposition(rec: Recorder) -> str:
    """What ``/metrics`` would say now: pending records accounted, counts flushed."""
    rec.drain()
    rec.metrics.pending.flush()
    return generate_latest(rec.metrics.registry).decode()


def samples(rec: Recorder) -> Samples:
    return parse(exposition(rec))


def call(n: int, *, key_id: str | None = None, team_id: str | None = None,
         cost: float | None = 0.5, status: Status = "ok",
         shadow_of: str | None = None) -> CallRecord:
    return CallRecord(id=f"c{n}", endpoint="/v1/chat/completions",
                      caller="key" if key_id else "master", key_id=key_id, team_id=team_id,
                      public_model="chat", provider="sim", status=status,
                      http_status=200 if status == "ok" else 499, cost_usd=cost, latency_ms=5.0,
                      shadow_of=shadow_of)


def test_every_scope_and_outcome_starts_at_zero() -> None:
    """Before any refusal, each scope and outcome is exported at 0 (so rates exist)."""
    s = samples(recorder())
    for scope in ("key", "team", "model"):
        assert ("switchboard_ratelimit_rejections_total", frozenset({("scope", scope)})) in s
        assert ("switchboard_budget_rejections_total", frozenset({("scope", scope)})) in s
    for outcome in ("admitted", "refused"):
        assert ("switchboard_limiter_unavailable_total",
                frozenset({("outcome", outcome)})) in s
    assert value(s, "switchboard_ratelimit_rejections_total") == 0
    assert value(s, "switchboard_spend_usd_total") == 0


def test_rejections_and_limiter_failures_are_counted() -> None:
    """Each call of limit_rejected, budget_rejected and limiter_unavailable adds one under its
    label, and only there."""
    rec = recorder()
    for _ in range(3):
        rec.limit_rejected("key")
    rec.limit_rejected("team")
    rec.budget_rejected("team")
    rec.budget_rejected("team")
    rec.limiter_unavailable("admitted")
    s = samples(rec)
    assert value(s, "switchboard_ratelimit_rejections_total", scope="key") == 3
    assert value(s, "switchboard_ratelimit_rejections_total", scope="team") == 1
    assert value(s, "switchboard_ratelimit_rejections_total", scope="model") == 0
    assert value(s, "switchboard_budget_rejections_total", scope="team") == 2
    assert value(s, "switchboard_budget_rejections_total", scope="key") == 0
    assert value(s, "switchboard_limiter_unavailable_total", outcome="admitted") == 1
    assert value(s, "switchboard_limiter_unavailable_total", outcome="refused") == 0
    rec.limit_rejected("key")
    assert value(samples(rec), "switchboard_ratelimit_rejections_total", scope="key") == 4


def test_spend_by_team_never_by_key() -> None:
    """Priced calls made with a team's key add to that team's spend (cancelled ones too);
    calls without a team or a price, and shadow copies, add nothing; no key id appears
    anywhere."""
    rec = recorder()
    rec.observe(call(1, key_id="key_secretish_1", team_id="team_1", cost=1.25))
    rec.observe(call(2, key_id="key_secretish_2", team_id="team_1", cost=0.5,
                     status="cancelled"))
    rec.observe(call(3, key_id="key_secretish_3", team_id="team_2", cost=2.0))
    rec.observe(call(4, key_id="key_secretish_4", cost=4.0))
    rec.observe(call(5, cost=8.0))
    rec.observe(call(6, key_id="key_secretish_5", team_id="team_3", cost=None))
    rec.observe(call(7, key_id="key_secretish_1", team_id="team_1", cost=16.0,
                     shadow_of="c1"))  # a shadow copy: no team's spend, as in budgets
    text = exposition(rec)
    s = parse(text)
    assert value(s, "switchboard_spend_usd_total", team="team_1") == pytest.approx(1.75)
    assert value(s, "switchboard_spend_usd_total", team="team_2") == pytest.approx(2.0)
    assert value(s, "switchboard_spend_usd_total") == pytest.approx(3.75)
    assert "team_3" not in text and "key_secretish" not in text
    # Every priced call, whatever its status and team (shadow copies too: billed upstream).
    assert value(s, "switchboard_cost_usd_total") == pytest.approx(31.75)


def test_team_label_is_capped() -> None:
    """Past MAX_TEAMS distinct teams in one process, spend goes to team="other"."""
    rec = recorder()
    extra = 5
    for n in range(MAX_TEAMS + extra):
        rec.observe(call(n, key_id=f"key_{n}", team_id=f"team_{n:03d}", cost=1.0))
    rec.observe(call(999, key_id="key_0", team_id="team_000", cost=1.0))
    rec.observe(call(1000, key_id="key_x", team_id=f"team_{MAX_TEAMS:03d}", cost=1.0))
    s = samples(rec)
    teams = {dict(labels)["team"] for name, labels in s if name == "switchboard_spend_usd_total"}
    assert len(teams) == MAX_TEAMS + 1 and "other" in teams
    assert value(s, "switchboard_spend_usd_total", team="team_000") == 2.0
    assert value(s, "switchboard_spend_usd_total", team="other") == extra + 1
    assert value(s, "switchboard_spend_usd_total") == MAX_TEAMS + extra + 2


def test_workers_sharing_slots_label_the_same_teams(tmp_path: Path) -> None:
    """Two workers (two recorders sharing one slots folder, as the workers of ``serve
    --workers N`` share the metrics folder): the first MAX_TEAMS teams either meets keep their
    own label in both, in whichever worker they spend, and the rest are "other" in both. Kept
    per worker, a team met first by one worker past its cap had half its spend under "other"."""
    first = Recorder(Metrics(), models={"chat"}, slots=VersionSlots(tmp_path))
    second = Recorder(Metrics(), models={"chat"}, slots=VersionSlots(tmp_path))
    for n in range(MAX_TEAMS - 10):
        first.observe(call(n, key_id="k", team_id=f"team_{n:03d}", cost=1.0))
    for n in range(MAX_TEAMS - 10, MAX_TEAMS + 20):  # second meets 30 teams first meets later
        second.observe(call(n, key_id="k", team_id=f"team_{n:03d}", cost=1.0))
    for n in range(MAX_TEAMS + 20):
        first.observe(call(n, key_id="k", team_id=f"team_{n:03d}", cost=1.0))
    second.observe(call(0, key_id="k", team_id="team_000", cost=1.0))
    for rec in (first, second):
        teams = {dict(labels)["team"] for name, labels in samples(rec)
                 if name == "switchboard_spend_usd_total"}
        assert {f"team_{n:03d}" for n in range(MAX_TEAMS)} >= teams - {"other"}
    one, two = samples(first), samples(second)
    assert value(two, "switchboard_spend_usd_total", team="team_000") == 1.0
    for n in (MAX_TEAMS - 10, MAX_TEAMS - 1):  # placed by second, own label in both
        assert value(one, "switchboard_spend_usd_total", team=f"team_{n:03d}") == 1.0
        assert value(two, "switchboard_spend_usd_total", team=f"team_{n:03d}") == 1.0
    assert value(one, "switchboard_spend_usd_total", team="other") == 20.0
    assert value(two, "switchboard_spend_usd_total", team="other") == 20.0


_WORKER = """
from app.calllog.record import CallRecord
from app.metrics.families import Metrics
from app.metrics.recorder import Recorder
rec = Recorder(Metrics(), models={"chat"})
rec.limit_rejected("key")
rec.budget_rejected("team")
rec.limiter_unavailable("refused")
rec.observe(CallRecord(id="c", endpoint="/v1/chat/completions", caller="key", key_id="k",
                       team_id="team_1", public_model="chat", cost_usd=0.25))
rec.drain()
rec.metrics.pending.flush()
"""


def test_workers_add_up_in_multiprocess_mode(tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR set (several workers), the new counters of two processes
    merge into one total."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    repo = Path(__file__).resolve().parents[2]
    for _ in range(2):
        subprocess.run([sys.executable, "-c", _WORKER], env=env, cwd=repo, check=True,
                       timeout=60)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))  # type: ignore[no-untyped-call]
    s = parse(generate_latest(registry).decode())
    assert value(s, "switchboard_ratelimit_rejections_total", scope="key") == 2
    assert value(s, "switchboard_budget_rejections_total", scope="team") == 2
    assert value(s, "switchboard_limiter_unavailable_total", outcome="refused") == 2
    assert value(s, "switchboard_spend_usd_total", team="team_1") == pytest.approx(0.5)
