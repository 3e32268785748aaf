"""Routing strategies and context windows through a running gateway and the openai SDK."""

from __future__ import annotations

from collections import Counter
from typing import Any

import openai
import pytest

from tests.api.conftest import GatewayFactory, sim_config


def two_sims(simulator: str, **model: Any) -> dict[str, Any]:
    raw = sim_config(simulator, chat={"targets": [
        {"provider": "sim", "model": "gpt-4o-mini"},
        {"provider": "sim2", "model": "gpt-4o-mini"}], **model})
    raw["providers"]["sim2"] = {**raw["providers"]["sim"]}
    return raw


def test_weighted_splits_first_attempts_by_weight(run_gateway: GatewayFactory,
                                                  simulator: str) -> None:
    raw = two_sims(simulator, strategy="weighted")
    raw["models"]["chat"]["targets"][0]["weight"] = 3
    with run_gateway(raw) as gateway:
        http = gateway.http()
        served = Counter(
            http.post("/v1/chat/completions", json={
                "model": "chat", "messages": [{"role": "user", "content": "hi"}]})
            .headers["x-switchboard-provider"] for _ in range(400))
    assert set(served) == {"sim", "sim2"}
    assert 0.65 < served["sim"] / 400 < 0.85  # 0.75 expected; 400 draws: +-0.065 at 3 sigma


def test_a_failing_preferred_target_still_falls_back(run_gateway: GatewayFactory,
                                                     simulator: str) -> None:
    raw = sim_config(simulator, chat={"strategy": "least_busy", "targets": [
        {"provider": "broken", "model": "gpt-4o-mini"},
        {"provider": "sim", "model": "gpt-4o-mini"}]})
    with run_gateway(raw) as gateway:
        answer = gateway.client().chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": "hi"}])
        assert answer.headers["x-switchboard-provider"] == "sim"
        record = gateway.sink.records[-1]
        assert [a.provider for a in record.attempts] == ["broken", "sim"]


def test_a_prompt_past_a_targets_context_window_skips_it(run_gateway: GatewayFactory,
                                                         simulator: str) -> None:
    raw = sim_config(simulator, chat={"targets": [
        {"provider": "sim", "model": "gpt-4o-mini", "context_window": 50},
        {"provider": "broken", "model": "gpt-4o-mini", "context_window": 100},
    ]})
    raw["providers"]["broken"] = {**raw["providers"]["sim"]}  # healthy under the other name
    with run_gateway(raw) as gateway:
        client = gateway.client()
        short = client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": "hi"}])
        assert short.headers["x-switchboard-provider"] == "sim"
        middling = client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": "word " * 70}])
        assert middling.headers["x-switchboard-provider"] == "broken"
        assert [a.provider for a in gateway.sink.records[-1].attempts] == ["broken"]
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model="chat", messages=[{"role": "user", "content": "word " * 1000}])
        error = caught.value.body
        assert isinstance(error, dict)
        assert (error["code"], error["param"]) == ("context_length_exceeded", "messages")
        assert "context window" in error["message"]


def test_an_unknown_strategy_is_a_config_error_naming_it() -> None:
    from app.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match=r"models\.chat\.strategy: .*unknown strategy 'fastest'"):
        parse_config({"providers": {"m": {"type": "mock"}}, "models": {"chat": {
            "strategy": "fastest", "targets": [{"provider": "m", "model": "x"}]}}}, {})
