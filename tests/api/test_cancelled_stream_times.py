"""A stream its client leaves after chunks went out: the call row's upstream time covers the
stream up to then, as a finished stream's does, and its overhead stays the gateway's own (it was
the whole stream's length)."""

from __future__ import annotations

from tests.api.conftest import GatewayFactory, sim_config

TPOT_MS = 40


def test_a_stream_left_mid_way_is_upstream_time_not_overhead(run_gateway: GatewayFactory,
                                                             simulator: str) -> None:
    """About 12 chunks at 40 ms each, then the client closes: upstream time is most of the
    latency, overhead a small part of it."""
    raw = sim_config(simulator)
    raw["providers"]["slow"] = {"type": "openai", "base_url": simulator + "/v1", "api_key": "k",
                                "headers": {"X-Sim-TPOT-Ms": str(TPOT_MS),
                                            "X-Sim-Completion-Tokens": "400"}}
    raw["models"]["chat"] = {"targets": [{"provider": "slow", "model": "gpt-4o-mini"}]}
    with run_gateway(raw) as gw:
        assert gw.leave_a_stream(simulator, request_id="left-mid-way", lines=24, body={
            "model": "chat", "stream": True, "max_tokens": 400,
            "messages": [{"role": "user", "content": "hi"}]}) == 1
        record = gw.sink.by_id("left-mid-way")
    assert (record.status, record.http_status) == ("cancelled", 499)
    assert record.usage is not None and record.usage.completion_tokens > 0  # chunks went out
    assert record.latency_ms is not None and record.latency_ms > 8 * TPOT_MS
    assert record.upstream_ms > record.latency_ms / 2, (record.latency_ms, record.upstream_ms)
    assert record.overhead_ms is not None and record.overhead_ms < record.latency_ms / 2
