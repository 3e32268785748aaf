"""Drift planted in the simulator, seen through a running gateway's ``/metrics``.

The public model and its target stay the same; only what the upstream answers changes (the
simulator's process-wide drift knobs). Each test runs a stable phase first and checks the
signal stays flat, then plants one drift and counts the requests until it is flagged.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from app.cli import main
from app.metrics.embedding_drift import encoder_available
from tests.api.conftest import MASTER_KEY, sim_config
from tests.metrics.scrape import Samples, scrape, value
from tests.metrics.test_endpoint import gateway

STABLE = {"completion_tokens": 60, "length_spread": 0.5}
DRIFT = {"baseline_size": 200, "window": 200, "evaluate_every": 10, "sync_interval_s": 0.2,
         "embedding": {"sample_rate": 0.0}}


@pytest.fixture
def sim(simulator: str) -> Iterator[httpx.Client]:
    """The shared simulator, answering with varied lengths; reset afterwards."""
    client = httpx.Client(base_url=simulator, timeout=10)
    client.post("/_sim/reset").raise_for_status()
    client.post("/_sim/state", json=STABLE).raise_for_status()
    try:
        yield client
    finally:
        client.post("/_sim/reset")
        client.close()


class Caller:
    """Sends chat requests to a gateway and reads its drift metrics."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=30,
                                 headers={"Authorization": f"Bearer {MASTER_KEY}"})
        self.sent = 0

    def __enter__(self) -> Caller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def send(self, n: int, **extra: Any) -> None:
        for _ in range(n):
            self.sent += 1
            response = self.http.post("/v1/chat/completions", json={
                "model": "chat", "max_tokens": 500,
                "messages": [{"role": "user", "content": f"Question number {self.sent}."}],
                **extra})
            assert response.status_code == 200, response.text

    def wait_embedded(self, n: int) -> Samples:
        """Scrape once the embedding monitor has embedded ``n`` answers (bounded wait)."""
        deadline = time.monotonic() + 60
        while True:
            status = self.http.get("/admin/drift").json()["embedding"]
            seen = sum(t["samples"] for t in status.values())
            if seen >= n:
                return self.samples()
            assert time.monotonic() < deadline, f"{seen} of {n} answers embedded"
            time.sleep(0.1)

    def samples(self) -> Samples:
        return scrape(self.url, MASTER_KEY)

    def flagged(self, signal: str) -> bool:
        return value(self.samples(), "switchboard_drift_flagged", model="chat",
                     provider="sim", signal=signal) == 1

    def until_flagged(self, signal: str, *, limit: int, step: int = 10, **extra: Any) -> int:
        """Requests sent until ``signal`` is flagged (fails past ``limit``)."""
        for sent in range(step, limit + step, step):
            self.send(step, **extra)
            if self.flagged(signal):
                return sent
        raise AssertionError(f"{signal} not flagged within {limit} requests: "
                             f"{self.http.get('/admin/drift').json()}")


@contextmanager
def drifting(tmp_path: Path, simulator: str, **drift: Any) -> Iterator[Caller]:
    """A gateway on the simulator with small drift windows, and a caller for it."""
    raw = sim_config(simulator)
    raw["drift"] = {**DRIFT, **drift}
    with gateway(tmp_path, raw) as url, Caller(url) as caller:
        yield caller


def test_halved_answers_flag_length_and_a_stable_stream_does_not(
        tmp_path: Path, simulator: str, sim: httpx.Client) -> None:
    """Length PSI stays low on a stable stream and flags answers cut to half within 500."""
    with drifting(tmp_path, simulator) as caller:
        caller.send(600)  # 200 for the baseline, 400 stable
        stable = caller.samples()
        assert value(stable, "switchboard_drift_length_psi", model="chat") < 0.1
        assert not caller.flagged("length")
        sim.post("/_sim/state", json={"completion_tokens": 30}).raise_for_status()
        assert caller.until_flagged("length", limit=500) <= 500
        assert value(caller.samples(), "switchboard_drift_length_psi", model="chat") > 0.25


def test_refusals_at_20_percent_are_flagged(tmp_path: Path, simulator: str,
                                            sim: httpx.Client) -> None:
    """The refusal rate is 0 on a stable stream and flags 20% refusals within 500 requests."""
    with drifting(tmp_path, simulator) as caller:
        caller.send(400)
        assert value(caller.samples(), "switchboard_refusals_total") == 0
        assert not caller.flagged("refusals")
        sim.post("/_sim/state", json={"refusal_rate": 0.2}).raise_for_status()
        assert caller.until_flagged("refusals", limit=500) <= 500
        assert value(caller.samples(), "switchboard_drift_refusal_rate", model="chat") > 0.05


def test_streams_feed_the_same_signals(tmp_path: Path, simulator: str,
                                       sim: httpx.Client) -> None:
    """Streamed answers count toward length and refusals like unary ones."""
    with drifting(tmp_path, simulator) as caller:
        caller.send(300, stream=True)
        sim.post("/_sim/state", json={"refusal_rate": 1.0}).raise_for_status()
        assert caller.until_flagged("refusals", limit=200, stream=True) <= 200
        assert value(caller.samples(), "switchboard_completion_tokens_count",
                     model="chat") == caller.sent


def test_a_new_fingerprint_counts_as_a_version_change(tmp_path: Path, simulator: str,
                                                      sim: httpx.Client) -> None:
    """A changed system_fingerprint counts one version change and moves the info gauge."""
    sim.post("/_sim/state", json={"fingerprint": "fp_old"}).raise_for_status()
    with drifting(tmp_path, simulator) as caller:
        caller.send(20)
        assert value(caller.samples(), "switchboard_upstream_version_changes_total") == 0
        sim.post("/_sim/state", json={"fingerprint": "fp_new"}).raise_for_status()
        caller.send(5)
        samples = caller.samples()
    assert value(samples, "switchboard_upstream_version_changes_total", model="chat") == 1
    info = "switchboard_upstream_model_info"
    assert value(samples, info, system_fingerprint="fp_new") == 1
    assert value(samples, info, system_fingerprint="fp_old") == 0


def test_finish_reasons_shift_when_answers_get_cut(tmp_path: Path, simulator: str,
                                                   sim: httpx.Client) -> None:
    """Answers cut by max_tokens show up as finish_reason="length"."""
    with drifting(tmp_path, simulator) as caller:
        caller.send(30)
        before = value(caller.samples(), "switchboard_finish_reasons_total", reason="length")
        caller.send(30, max_tokens=5)
        samples = caller.samples()
    assert before == 0
    assert value(samples, "switchboard_finish_reasons_total", reason="length") == 30
    assert value(samples, "switchboard_finish_reasons_total", reason="stop") == 30


def test_json_answers_are_checked_when_json_was_asked_for(tmp_path: Path, simulator: str,
                                                          sim: httpx.Client) -> None:
    """Answers to response_format=json_object requests are counted valid or invalid."""
    with drifting(tmp_path, simulator) as caller:
        caller.send(10)
        caller.send(12, response_format={"type": "json_object"})
        samples = caller.samples()
    counted = (value(samples, "switchboard_json_answers_total", valid="true")
               + value(samples, "switchboard_json_answers_total", valid="false"))
    assert counted == 12


def test_admin_drift_shows_every_answered_call_at_once(tmp_path: Path, simulator: str,
                                                       sim: httpx.Client) -> None:
    """``/admin/drift`` accounts the calls the recorder holds before it answers (as
    ``/metrics`` does), so it never lags the metrics loop's one-second flush."""
    with drifting(tmp_path, simulator) as caller:
        for sent in range(1, 4):
            caller.send(1)
            targets = caller.http.get("/admin/drift").json()["targets"]
            chat = next(t for t in targets if t["model"] == "chat")
            assert chat["capturing"] == sent, chat


@pytest.mark.skipif(not encoder_available(), reason="needs the [local] extra")
def test_embedding_distance_moves_when_answers_change(tmp_path: Path, simulator: str,
                                                      sim: httpx.Client) -> None:
    """Sampled answers' embedding centroid drifts from the baseline when answers change."""
    embedding = {"sample_rate": 1.0, "baseline_size": 30, "window": 30, "threshold": 0.1,
                 "max_per_second": 10_000}
    with drifting(tmp_path, simulator, embedding=embedding) as caller:
        caller.send(60)
        stable = value(caller.wait_embedded(60), "switchboard_drift_embedding_distance")
        sim.post("/_sim/state", json={"refusal_rate": 1.0}).raise_for_status()
        caller.send(30)
        drifted = value(caller.wait_embedded(90), "switchboard_drift_embedding_distance")
    assert stable < 0.1 < drifted


def test_a_reset_accepts_the_change_without_flagging_it(tmp_path: Path, simulator: str,
                                                        sim: httpx.Client) -> None:
    """`switchboard drift baseline reset` after a flagged change: the gateway captures a new
    baseline from the answers after it and compares it with those only, so the accepted
    change is not flagged again (the tester's report, defect 2)."""
    small = {"baseline_size": 20, "window": 20, "evaluate_every": 5}
    with drifting(tmp_path, simulator, **small) as caller:
        caller.send(40)
        sim.post("/_sim/state", json={"completion_tokens": 300}).raise_for_status()
        assert caller.until_flagged("length", limit=40, step=5) <= 40
        reset = CliRunner().invoke(main, [
            "drift", "baseline", "reset", "chat",
            "--database-url", f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}"])
        assert reset.exit_code == 0, reset.output
        deadline = time.monotonic() + 10
        while (chat := caller.http.get("/admin/drift").json()["targets"][0])["baseline"]:
            assert time.monotonic() < deadline, chat
            time.sleep(0.05)
        assert (chat["window"], chat["flagged"], chat.get("psi")) == (0, [], None)
        caller.send(20)  # the new baseline
        while not caller.http.get("/admin/drift").json()["targets"][0]["baseline"]:
            assert time.monotonic() < deadline + 10
            time.sleep(0.05)
        caller.send(20)
        assert not caller.flagged("length")
