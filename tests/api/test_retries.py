"""Retries of a target before falling back: Retry-After honoured, the retry budget, and the
call's deadline (shortened by the client's header), through a running gateway."""

from __future__ import annotations

import time
from typing import Any

from tests.api.conftest import GatewayFactory, sim_config

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


def limited_first(simulator: str, **retries: Any) -> dict[str, Any]:
    raw = sim_config(simulator, chat={"targets": [
        {"provider": "limited", "model": "gpt-4o-mini"},
        {"provider": "sim", "model": "gpt-4o-mini"}]})
    raw["providers"]["limited"] = {**raw["providers"]["sim"],
                                   "headers": {"X-Return-Error": "429"}}  # with Retry-After: 1
    raw["retries"] = retries
    return raw


def test_retry_after_is_waited_for_then_the_next_target_tried(run_gateway: GatewayFactory,
                                                              simulator: str) -> None:
    with run_gateway(limited_first(simulator, attempts=1)) as gateway:
        started = time.monotonic()
        answer = gateway.http().post("/v1/chat/completions", json=CHAT)
        waited = time.monotonic() - started
        assert answer.status_code == 200 and answer.headers["x-switchboard-provider"] == "sim"
        attempts = [(a.provider, a.status) for a in gateway.sink.records[-1].attempts]
        assert attempts == [("limited", 429), ("limited", 429), ("sim", 200)]
        assert waited >= 1.0  # the upstream's Retry-After: 1, honoured


def test_a_retry_after_past_the_cap_falls_back_at_once(run_gateway: GatewayFactory,
                                                       simulator: str) -> None:
    with run_gateway(limited_first(simulator, attempts=3, max_retry_after_s=0.5)) as gateway:
        assert gateway.http().post("/v1/chat/completions", json=CHAT).status_code == 200
        attempts = [(a.provider, a.status) for a in gateway.sink.records[-1].attempts]
        assert attempts == [("limited", 429), ("sim", 200)]


def test_the_budget_caps_retries(run_gateway: GatewayFactory) -> None:
    raw = {"providers": {"down": {"type": "mock", "fail_status": 503},
                         "up": {"type": "mock"}},
           "models": {"m": {"targets": [{"provider": "down", "model": "m"},
                                        {"provider": "up", "model": "m"}]}},
           "retries": {"attempts": 1, "budget": 0, "min_retries": 2, "backoff_s": 0.01},
           "breaker": {"enabled": False}}
    with run_gateway(raw) as gateway:
        http = gateway.http()
        for _ in range(4):
            assert http.post("/v1/chat/completions", json={**CHAT, "model": "m"}).status_code \
                == 200
        statuses = [[a.status for a in r.attempts] for r in gateway.sink.records]
        assert statuses == [[503, 503, 200], [503, 503, 200], [503, 200], [503, 200]]


def test_the_clients_deadline_header_shortens_the_wait(run_gateway: GatewayFactory,
                                                       simulator: str, black_hole: str) -> None:
    raw = sim_config(simulator, chat={"targets": [
        {"provider": "hole", "model": "gpt-4o-mini"},
        {"provider": "sim", "model": "gpt-4o-mini"}]})
    raw["providers"]["hole"] = {"type": "openai", "base_url": black_hole, "api_key": "sk-h",
                                "timeout_s": 30}
    with run_gateway(raw) as gateway:
        http = gateway.http()
        answer = http.post("/v1/chat/completions", json=CHAT,
                           headers={"x-switchboard-deadline-s": "0.3"})
        assert answer.status_code == 504
        assert answer.json()["error"]["code"] == "deadline_exceeded"
        assert [a.provider for a in gateway.sink.records[-1].attempts] == ["hole"]
        for bad in ("0", "-1", "soon", "nan"):
            refused = http.post("/v1/chat/completions", json=CHAT,
                                headers={"x-switchboard-deadline-s": bad})
            assert refused.status_code == 400, bad
            assert refused.json()["error"]["param"] == "x-switchboard-deadline-s"
