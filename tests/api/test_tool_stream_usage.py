"""A tool-call stream cut short after chunks went out (its client left, or its upstream failed)
keeps the tokens of the tool call that went out, estimated as a text stream's are: a provider
bills the arguments it generated."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.conftest import MASTER_KEY, GatewayFactory

CLAUDE_MODEL = "claude-sonnet-4-20250514"
SLOW = {"X-Sim-TPOT-Ms": "40"}
PARAMETERS = {"type": "object", "required": ["city", "days", "notes"],
              "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                             "notes": {"type": "string"}}}
CHAT_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                              "parameters": PARAMETERS}}
CHAT_BODY = {"model": "gpt", "stream": True, "tools": [CHAT_TOOL], "tool_choice": "required",
             "messages": [{"role": "user", "content": "weather in Paris"}]}
MESSAGES_BODY = {"model": "claude", "stream": True, "max_tokens": 200,
                 "tools": [{"name": "get_weather", "description": "Weather",
                            "input_schema": PARAMETERS}],
                 "tool_choice": {"type": "any"},
                 "messages": [{"role": "user", "content": "weather in Paris"}]}


def config(simulator: str, headers: dict[str, str]) -> dict[str, Any]:
    return {
        "providers": {
            "sim": {"type": "openai", "base_url": simulator + "/v1", "api_key": "sk-s",
                    "headers": headers},
            "claude": {"type": "anthropic", "base_url": simulator, "api_key": "sk-ant",
                       "headers": headers},
        },
        "models": {
            "gpt": {"targets": [{"provider": "sim", "model": "gpt-4o-mini"}]},
            "claude": {"targets": [{"provider": "claude", "model": CLAUDE_MODEL}]},
        },
        "drift": {"embedding": {"sample_rate": 0}},
        "retries": {"attempts": 0},
    }


@pytest.mark.parametrize(("path", "body", "headers"), [
    ("/v1/chat/completions", CHAT_BODY, {"Authorization": f"Bearer {MASTER_KEY}"}),
    ("/v1/messages", MESSAGES_BODY, {"x-api-key": MASTER_KEY}),
], ids=["chat", "messages-native"])
def test_a_tool_call_stream_left_mid_way_keeps_its_tokens(
        run_gateway: GatewayFactory, simulator: str, path: str, body: dict[str, Any],
        headers: dict[str, str]) -> None:
    """The client leaves while the tool call's arguments stream: the cancelled call records
    the estimated tokens of what went out, not zero."""
    with run_gateway(config(simulator, SLOW)) as gw:
        assert gw.leave_a_stream(simulator, request_id="left-tool", path=path, body=body,
                                 headers=headers, lines=12) == 1
        record = gw.sink.by_id("left-tool")
    assert (record.status, record.http_status) == ("cancelled", 499)
    assert record.usage is not None and record.usage.estimated
    assert record.usage.completion_tokens > 0


def test_a_tool_call_stream_its_upstream_cuts_keeps_its_tokens(run_gateway: GatewayFactory,
                                                               simulator: str) -> None:
    """The upstream fails mid-way through a tool call's arguments: the failed call records the
    estimated tokens of the chunks that went out, not zero."""
    with run_gateway(config(simulator, {"X-Sim-Error-After": "4"})) as gw, httpx.stream(
            "POST", gw.url + "/v1/chat/completions", timeout=10, json=CHAT_BODY,
            headers={"Authorization": f"Bearer {MASTER_KEY}", "x-request-id": "cut-tool"},
    ) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert any('"arguments"' in line for line in lines)
    record = gw.sink.by_id("cut-tool")
    assert record.status == "error"
    assert record.usage is not None and record.usage.estimated
    assert record.usage.completion_tokens > 0
