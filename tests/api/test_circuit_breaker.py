"""A black-holed target behind a running gateway: its circuit breaker opens after a bounded
number of calls, which then skip it; streams leave it before the client is committed; after
the cooldown one call probes it. The upstream that never answers is a listening socket nobody
accepts from (``black_hole``)."""

from __future__ import annotations

import time
from typing import Any

from tests.api.conftest import GatewayFactory, sim_config

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


def config(simulator: str, black_hole: str, **breaker: Any) -> dict[str, Any]:
    raw = sim_config(simulator, chat={"targets": [
        {"provider": "hole", "model": "gpt-4o-mini"},
        {"provider": "sim", "model": "gpt-4o-mini"}]})
    raw["providers"]["hole"] = {"type": "openai", "base_url": black_hole, "api_key": "sk-h",
                                "timeout_s": 0.3, "first_chunk_timeout_s": 0.3}
    raw["breaker"] = {"failures": 3, "cooldown_s": 60, **breaker}
    return raw


def test_a_black_holed_target_costs_a_few_calls_then_is_skipped(
        run_gateway: GatewayFactory, simulator: str, black_hole: str) -> None:
    with run_gateway(config(simulator, black_hole)) as gateway:
        http = gateway.http()
        for _ in range(20):
            answer = http.post("/v1/chat/completions", json=CHAT)
            assert answer.status_code == 200 and answer.headers["x-switchboard-provider"] == "sim"
        tried = [[a.provider for a in r.attempts] for r in gateway.sink.records]
        assert tried == [["hole", "sim"]] * 3 + [["sim"]] * 17
        assert tried[0] and gateway.sink.records[0].attempts[0].status == 504
        routing = http.get("/admin/routing").json()["models"]["chat"]["targets"]
        assert [(t["provider"], t["state"]) for t in routing] == [("hole", "open"),
                                                                   ("sim", "closed")]
        metrics = http.get("/metrics").text
        assert 'switchboard_target_state{model="gpt-4o-mini",provider="hole"} 2.0' in metrics


def test_a_black_holed_stream_is_left_before_the_client_is_committed(
        run_gateway: GatewayFactory, simulator: str, black_hole: str) -> None:
    with run_gateway(config(simulator, black_hole)) as gateway:
        client = gateway.client()
        for _ in range(5):
            chunks = list(client.chat.completions.create(stream=True, **CHAT))  # type: ignore[call-overload]
            assert chunks and chunks[0].choices[0].delta is not None
        tried = [[a.provider for a in r.attempts] for r in gateway.sink.records]
        assert tried == [["hole", "sim"]] * 3 + [["sim"]] * 2
        assert {r.status for r in gateway.sink.records} == {"ok"}


def test_after_the_cooldown_one_call_probes_and_a_failed_probe_reopens_it(
        run_gateway: GatewayFactory, simulator: str, black_hole: str) -> None:
    with run_gateway(config(simulator, black_hole, failures=1, cooldown_s=0.5)) as gateway:
        http = gateway.http()
        assert http.post("/v1/chat/completions", json=CHAT).status_code == 200  # opens it
        assert http.post("/v1/chat/completions", json=CHAT).status_code == 200  # skips it
        time.sleep(0.6)
        assert http.post("/v1/chat/completions", json=CHAT).status_code == 200  # probes it
        assert http.post("/v1/chat/completions", json=CHAT).status_code == 200  # skips it
        tried = [[a.provider for a in r.attempts] for r in gateway.sink.records]
        assert tried == [["hole", "sim"], ["sim"], ["hole", "sim"], ["sim"]]
        hole = http.get("/admin/routing").json()["models"]["chat"]["targets"][0]
        assert (hole["state"], hole["cooldown_s"]) == ("open", 1.0)  # doubled
