"""Cost and token metrics count every call that has a cost, as the call log and budgets do:
streams the client left, and streams the upstream cut, are billed by their provider. Drift
signals stay answered calls' only."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import MASTER_KEY, GatewayFactory
from tests.metrics.scrape import scrape, value


def test_cancelled_and_failed_streams_count_in_cost_and_tokens(run_gateway: GatewayFactory,
                                                               simulator: str) -> None:
    """A stream its client left (cancelled) and one its upstream cut (error) add their
    recorded tokens and cost to switchboard_tokens_total and switchboard_cost_usd_total (the
    call log's figures); neither reaches the drift histogram of completion lengths or the
    time-to-first-token one."""
    def provider(**headers: str) -> dict[str, Any]:
        return {"type": "openai", "base_url": simulator + "/v1", "api_key": "k",
                "headers": headers}

    raw: dict[str, Any] = {
        "providers": {"slow": provider(**{"X-Sim-TPOT-Ms": "30",
                                          "X-Sim-Completion-Tokens": "300"}),
                      "cut": provider(**{"X-Sim-Cut-After": "4"})},
        "models": {"slow": {"targets": [{"provider": "slow", "model": "gpt-4o-mini"}]},
                   "cut": {"targets": [{"provider": "cut", "model": "gpt-4o-mini"}]}},
        "drift": {"embedding": {"sample_rate": 0}},
        "retries": {"attempts": 0},
    }
    body = {"stream": True, "max_tokens": 300, "messages": [{"role": "user", "content": "hi"}]}
    with run_gateway(raw) as gw:
        assert gw.leave_a_stream(simulator, request_id="left", lines=8,
                                 body={**body, "model": "slow"}) == 1
        with gw.http().stream("POST", "/v1/chat/completions", json={**body, "model": "cut"},
                              headers={"x-request-id": "cut"}) as response:
            response.read()
        samples = scrape(gw.url, MASTER_KEY)
        left, cut = gw.sink.by_id("left"), gw.sink.by_id("cut")
    assert left.status == "cancelled" and cut.status == "error", (left.status, cut.status)
    for record, model in ((left, "slow"), (cut, "cut")):
        usage = record.usage
        assert usage is not None and usage.completion_tokens > 0 and record.cost_usd, record
        target = {"model": model, "provider": model}
        assert value(samples, "switchboard_tokens_total", direction="input",
                     **target) == usage.prompt_tokens
        assert value(samples, "switchboard_tokens_total", direction="output",
                     **target) == usage.completion_tokens
        assert value(samples, "switchboard_cost_usd_total", **target) == pytest.approx(
            record.cost_usd)
        assert value(samples, "switchboard_completion_tokens_count", **target) == 0
        assert value(samples, "switchboard_time_to_first_token_seconds_count", **target) == 0
