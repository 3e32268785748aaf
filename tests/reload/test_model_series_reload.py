"""Traffic series follow live reloads: a model a reload removes loses its series (requests,
durations, tokens, cost, upstream attempts, errors and fallbacks), as its drift series do, so
``/metrics`` does not keep every model name ever configured until a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from app.calllog.record import Attempt, CallRecord
from app.metrics.families import Metrics
from app.metrics.recorder import Recorder
from app.usage import Usage
from tests.reload.test_target_state_reload import ADMIN, reload, serving


def config(simulator: str, *, with_gone: bool) -> dict[str, Any]:
    """``chat`` on the simulator; with ``with_gone`` also ``gone``, whose first target always
    answers 503, so each of its calls falls back to the simulator."""
    sim = {"type": "openai", "base_url": f"{simulator}/v1", "api_key": "sk-test-abcdefghijklmnop"}
    raw: dict[str, Any] = {
        "providers": {"sim": sim, "bad": {**sim, "headers": {"x-return-error": "503"}}},
        "models": {"chat": {"targets": [{"provider": "sim", "model": "gpt-4o-mini"}]}},
        "retries": {"attempts": 0},
        "drift": {"embedding": {"sample_rate": 0}}}
    if with_gone:
        raw["models"]["gone"] = {"targets": [{"provider": "bad", "model": "gpt-4o"},
                                             {"provider": "sim", "model": "gpt-4o"}]}
    return raw


def series(url: str, model: str) -> set[str]:
    """The families of ``/metrics`` with a series of ``model``."""
    text = httpx.get(f"{url}/metrics", headers=ADMIN).text
    return {line.split("{")[0] for line in text.splitlines()
            if not line.startswith("#") and f'model="{model}"' in line}


TRAFFIC = {"switchboard_requests_total", "switchboard_request_duration_seconds_bucket",
           "switchboard_time_to_first_token_seconds_bucket", "switchboard_tokens_total",
           "switchboard_cost_usd_total", "switchboard_upstream_duration_seconds_bucket",
           "switchboard_upstream_attempts_total", "switchboard_upstream_errors_total",
           "switchboard_fallbacks_total"}


def test_a_reload_removing_a_model_removes_its_traffic_series(tmp_path: Path,
                                                              simulator: str) -> None:
    """Every traffic family of a removed model loses its series; the models kept keep theirs;
    a later call naming it counts under ``other`` and brings none back."""
    file = tmp_path / "gateway.yaml"
    with serving(file, config(simulator, with_gone=True)) as url, \
            httpx.Client(base_url=url, headers=ADMIN, timeout=30) as http:
        for model in ("gone", "chat"):
            for stream in (False, True):
                got = http.post("/v1/chat/completions", json={
                    "model": model, "stream": stream,
                    "messages": [{"role": "user", "content": "hi"}]})
                assert got.status_code == 200, got.text
        assert series(url, "gone") >= TRAFFIC
        kept = series(url, "chat")
        reload(url, file, config(simulator, with_gone=False))
        assert series(url, "gone") == set()
        assert series(url, "chat") == kept
        got = http.post("/v1/chat/completions", json={
            "model": "gone", "messages": [{"role": "user", "content": "hi"}]})
        assert got.status_code == 404, got.text
        assert series(url, "gone") == set()
        assert "switchboard_requests_total" in series(url, "other")


def test_with_workers_a_removed_models_series_keep_their_values() -> None:
    """In multiprocess mode, where a series cannot be removed, a removed model's counters stay
    at their values (nothing is lost from them), and a call of it finishing later counts under
    ``other``."""
    metrics = Metrics(multiprocess=True)
    recorder = Recorder(metrics, models=["chat", "gone"])

    def call(model: str) -> CallRecord:
        record = CallRecord(id="c", endpoint="/v1/chat/completions", caller="master",
                            public_model=model, provider="sim", latency_ms=5.0, cost_usd=0.5,
                            attempts=[Attempt("sim", "m", 200, None, 4.0)])
        record.usage = Usage(prompt_tokens=3, completion_tokens=2)
        return record

    recorder.observe(call("gone"))
    recorder.drain()
    recorder.set_models(["chat"])
    recorder.observe(call("gone"))
    recorder.drain()
    metrics.pending.flush()
    labels = {"model": "gone", "provider": "sim"}
    assert metrics.registry.get_sample_value("switchboard_cost_usd_total", labels) == 0.5
    assert metrics.registry.get_sample_value(
        "switchboard_upstream_attempts_total", {**labels, "outcome": "ok"}) == 1
    assert metrics.registry.get_sample_value(
        "switchboard_cost_usd_total", {"model": "other", "provider": "sim"}) == 0.5
