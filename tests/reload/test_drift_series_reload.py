"""Drift follows live reloads: a model (or target) a reload removes loses its drift state and
series, a ``drift_flagged`` at 1 included (it would otherwise fire until a restart)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from app.config import Drift
from app.metrics.baselines import MemoryBaselines
from app.metrics.drift import DriftMonitor
from app.metrics.families import Metrics
from tests.metrics.scrape import scrape, value
from tests.metrics.test_drift import answer
from tests.reload.test_target_state_reload import ADMIN, MASTER, reload, serving

DRIFT = {"baseline_size": 10, "window": 10, "evaluate_every": 5, "sync_interval_s": 0.2,
         "embedding": {"sample_rate": 0}}


def config(simulator: str, *, with_gone: bool) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "providers": {"sim": {"type": "openai", "base_url": f"{simulator}/v1",
                              "api_key": "sk-test-abcdefghijklmnop"}},
        "models": {"chat": {"targets": [{"provider": "sim", "model": "gpt-4o-mini"}]}},
        "drift": DRIFT}
    if with_gone:
        raw["models"]["gone"] = {"targets": [{"provider": "sim", "model": "gpt-4o"}]}
    return raw


DRIFT_FAMILIES = ("switchboard_completion_tokens", "switchboard_finish_reasons",
                  "switchboard_refusals", "switchboard_json_answers", "switchboard_drift_",
                  "switchboard_upstream_model_info", "switchboard_upstream_version_changes")


def drift_series(url: str, model: str) -> list[str]:
    text = httpx.get(f"{url}/metrics", headers=ADMIN).text
    return [line for line in text.splitlines()
            if line.startswith(DRIFT_FAMILIES) and f'model="{model}"' in line]


def test_a_reload_removing_a_model_removes_its_drift_series(tmp_path: Path,
                                                            simulator: str) -> None:
    file = tmp_path / "gateway.yaml"
    with serving(file, config(simulator, with_gone=True)) as url, \
            httpx.Client(base_url=url, headers=ADMIN, timeout=30) as http:
        def send(model: str, n: int, max_tokens: int) -> None:
            for _ in range(n):
                got = http.post("/v1/chat/completions", json={
                    "model": model, "max_tokens": max_tokens,
                    "messages": [{"role": "user", "content": "Tell me a long story."}]})
                assert got.status_code == 200, got.text

        send("gone", 10, 400)  # the baseline
        send("gone", 10, 1)  # answers cut to one token: length flagged
        send("chat", 3, 400)
        samples = scrape(url, MASTER)
        assert value(samples, "switchboard_drift_flagged", model="gone", signal="length") == 1
        reload(url, file, config(simulator, with_gone=False))
        assert drift_series(url, "gone") == []
        assert drift_series(url, "chat") != []
        targets = http.get("/admin/drift").json()["targets"]
        assert [t["model"] for t in targets] == ["chat"]


def test_with_workers_a_removed_targets_drift_gauges_stay_at_0() -> None:
    """In multiprocess mode, where a series cannot be removed, a removed target's flags and
    current version are left at 0, never at a flag or a version nothing will change."""
    metrics = Metrics(multiprocess=True)
    mon = DriftMonitor(Drift(baseline_size=10, window=10, evaluate_every=5), metrics=metrics,
                       store=MemoryBaselines())
    for tokens in [300] * 10 + [1] * 10:
        mon.observe("chat", "sim", tokens, answer())
    labels = {"model": "chat", "provider": "sim", "upstream_model": "gpt-4o-mini"}
    flagged = {**labels, "signal": "length"}
    assert metrics.registry.get_sample_value("switchboard_drift_flagged", flagged) == 1
    mon.set_targets([("chat", "sim", "gpt-4o")])
    metrics.pending.flush()
    assert metrics.registry.get_sample_value("switchboard_drift_flagged", flagged) == 0
    info = {**labels, "response_model": "gpt-4o-mini", "system_fingerprint": "fp_1"}
    assert metrics.registry.get_sample_value("switchboard_upstream_model_info", info) == 0
    assert metrics.registry.get_sample_value("switchboard_drift_length_psi", labels) == 0
    assert mon.status() == []
