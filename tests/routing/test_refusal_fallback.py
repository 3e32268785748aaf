# ruff: noqa: F811  (pytest passes the imported run_gateway fixture by parameter name)
"""A target's own refusal of what a call asks (the 400 its provider type gives before sending
anything) moves the call on to the next target, on every endpoint and streamed or not, is kept
as an attempt, and says nothing of the target's health."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from app.simulator.gemini import API_KEY as GEMINI_KEY
from tests.api.conftest import (  # noqa: F401 - run_gateway is a fixture, used by name
    MASTER_KEY,
    GatewayFactory,
    RunningGateway,
    run_gateway,
)

GEMINI = {"provider": "google", "model": "gemini-2.5-flash"}
OPENAI = {"provider": "sim", "model": "gpt-4o-mini"}
COHERE = {"provider": "co", "model": "command-r-plus"}
USER = [{"role": "user", "content": "weather in Oslo?"}]
CHAT_TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


@pytest.fixture
def gw(run_gateway: GatewayFactory, simulator: str) -> Iterator[RunningGateway]:
    raw = {
        "providers": {
            "google": {"type": "gemini", "api_key": GEMINI_KEY,
                       "base_url": simulator + "/gemini/v1beta"},
            "sim": {"type": "openai", "base_url": simulator + "/v1", "api_key": "sk-s"},
            "co": {"type": "cohere", "base_url": simulator, "api_key": "co-x"},
        },
        "models": {
            "mixed": {"targets": [GEMINI, OPENAI]},
            "neither": {"targets": [GEMINI, COHERE]},
        },
        # one failure would open a breaker: a refusal must not
        "breaker": {"failures": 1, "cooldown_s": 300},
        "drift": {"embedding": {"sample_rate": 0}},
        "retries": {"attempts": 0},
    }
    with run_gateway(raw) as running:
        yield running


def chat(gw: RunningGateway, request_id: str, **body: Any) -> httpx.Response:
    body = {"model": "mixed", "messages": USER, **body}
    with httpx.Client(timeout=30) as client:
        return client.post(gw.url + "/v1/chat/completions", json=body, headers={
            "Authorization": f"Bearer {MASTER_KEY}", "x-request-id": request_id})


def attempts(gw: RunningGateway, request_id: str) -> list[tuple[str, int]]:
    return [(a.provider, a.status) for a in gw.sink.by_id(request_id).attempts]


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
def test_a_refused_parameter_goes_on_to_the_next_target(gw: RunningGateway,
                                                        stream: bool) -> None:
    """``parallel_tool_calls: false``, which Gemini cannot be told, is served by the OpenAI
    target after it; Gemini's refusal is the call's first attempt."""
    reply = chat(gw, f"refused-{stream}", tools=CHAT_TOOLS, parallel_tool_calls=False,
                 stream=stream)
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-switchboard-provider"] == "sim"
    assert attempts(gw, f"refused-{stream}") == [("google", 400), ("sim", 200)]


def test_a_refusal_leaves_the_targets_health_alone(gw: RunningGateway) -> None:
    """After a refusal, a call Gemini can serve still goes to it first (its breaker, opened
    by one failure in this config, stayed closed)."""
    assert chat(gw, "first", tools=CHAT_TOOLS, parallel_tool_calls=False).status_code == 200
    reply = chat(gw, "second")
    assert reply.status_code == 200
    assert attempts(gw, "second") == [("google", 200)]


def test_a_messages_call_falls_back_too(gw: RunningGateway) -> None:
    """``/v1/messages`` with ``disable_parallel_tool_use`` on a model of Gemini then OpenAI is
    answered by OpenAI."""
    with anthropic.Anthropic(base_url=gw.url, api_key=MASTER_KEY, max_retries=0) as client:
        reply: Any = client.messages.create(
            model="mixed", max_tokens=20, messages=[{"role": "user", "content": "hi"}],
            tools=[{"name": "f", "input_schema": {"type": "object"}}],
            tool_choice={"type": "auto", "disable_parallel_tool_use": True},
            extra_headers={"x-request-id": "messages"})
    assert reply.type == "message"
    assert attempts(gw, "messages") == [("google", 400), ("sim", 200)]


def test_when_every_target_refuses_the_last_refusal_is_the_answer(gw: RunningGateway) -> None:
    """Gemini, then Cohere: both refuse ``parallel_tool_calls: false``; the client gets
    Cohere's 400, naming the parameter."""
    reply = chat(gw, "neither", model="neither", tools=CHAT_TOOLS, parallel_tool_calls=False)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["param"] == "parallel_tool_calls" and error["message"].startswith("Cohere")
    assert attempts(gw, "neither") == [("google", 400), ("co", 400)]
