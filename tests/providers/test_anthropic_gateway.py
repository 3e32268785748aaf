# ruff: noqa: F811  (pytest passes the imported run_gateway fixture by parameter name)
"""An ``anthropic`` provider behind a running gateway (openai SDK) against the simulator's
Messages API: structured output end to end."""

from __future__ import annotations

import json
from typing import Any

import httpx
from openai.types.chat import ChatCompletionMessageParam

from tests.api.conftest import (  # noqa: F401  (run_gateway: the fixture, used by name)
    GatewayFactory,
    run_gateway,
    sim_config,
)

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Tell me about tides"}]
SCHEMA: Any = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
               "additionalProperties": False}


def config(simulator: str) -> dict[str, Any]:
    raw = sim_config(simulator, claude={"targets": [{"provider": "claude",
                                                     "model": "claude-sonnet-4-5"}]})
    raw["providers"]["claude"] = {"type": "anthropic", "base_url": simulator,
                                  "api_key": "sk-ant-secret"}
    return raw


def test_json_schema_answers_schema_json_plain_and_streamed(run_gateway: GatewayFactory,
                                                            simulator: str) -> None:
    """response_format json_schema travels as output_config.format and Claude's answer is
    JSON following the schema, plain and streamed."""
    response_format: Any = {"type": "json_schema",
                            "json_schema": {"name": "x", "schema": SCHEMA}}
    with run_gateway(config(simulator)) as gw:
        client = gw.client()
        reply = client.chat.completions.create(model="claude", messages=USER,
                                               response_format=response_format)
        assert json.loads(reply.choices[0].message.content or "") == {"a": 0}
        assert reply.choices[0].finish_reason == "stop"
        (sent,) = httpx.get(f"{simulator}/_sim/requests?limit=1").json()
        assert sent["body"]["output_config"] == {"format": {"type": "json_schema",
                                                            "schema": SCHEMA}}
        chunks = list(client.chat.completions.create(model="claude", messages=USER,
                                                     response_format=response_format,
                                                     stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert json.loads(text) == {"a": 0}


THINKING: Any = {"thinking": {"type": "enabled", "budget_tokens": 1024}}
WEATHER: Any = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}}, "required": ["city"]}}}


def _streamed_message(chunks: list[Any]) -> dict[str, Any]:
    """The assistant message a client rebuilds from a stream's chunks (``model_extra`` holds
    the fields the SDK does not know: ``reasoning_content``, ``thinking_blocks``)."""
    reasoning = ""
    thinking_blocks: list[Any] = []
    calls: dict[int, Any] = {}
    for chunk in chunks:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        extra = delta.model_extra or {}
        reasoning += extra.get("reasoning_content") or ""
        thinking_blocks += extra.get("thinking_blocks") or []
        for call in delta.tool_calls or ():
            known = calls.setdefault(call.index, {"id": "", "type": "function",
                                                  "function": {"name": "", "arguments": ""}})
            known["id"] = call.id or known["id"]
            known["function"]["name"] += call.function.name or ""
            known["function"]["arguments"] += call.function.arguments or ""
    return {"role": "assistant", "content": None, "reasoning_content": reasoning,
            "thinking_blocks": thinking_blocks, "tool_calls": list(calls.values())}


def test_extended_thinking_with_tools_round_trips_its_thinking_blocks(
        run_gateway: GatewayFactory, simulator: str) -> None:
    """With thinking on, an answer's thinking blocks (signed) come back as
    message.thinking_blocks, plain and streamed; sent back on the assistant message, they
    reach Anthropic first in that turn, so the tool-result call is answered (the simulated
    Anthropic refuses it without them, as Anthropic does); without them the gateway answers a
    400 naming them before sending."""
    with run_gateway(config(simulator)) as gw:
        client = gw.client()
        for stream in (False, True):
            asked: Any = {"model": "claude", "messages": USER, "max_tokens": 2048,
                          "tools": [WEATHER], "tool_choice": "required", "extra_body": THINKING}
            if stream:
                assistant = _streamed_message(list(
                    client.chat.completions.create(stream=True, **asked)))
            else:
                message = client.chat.completions.create(**asked).choices[0].message
                assistant = message.model_dump(exclude_none=True)
            (block,) = assistant["thinking_blocks"]
            assert block["type"] == "thinking" and block["signature"]
            assert block["thinking"] == assistant["reasoning_content"]
            call = assistant["tool_calls"][0]
            history: Any = [*USER, assistant, {"role": "tool", "tool_call_id": call["id"],
                                               "content": "Sunny"}]
            reply = client.chat.completions.create(model="claude", messages=history,
                                                   max_tokens=2048, tools=[WEATHER],
                                                   extra_body=THINKING)
            assert reply.choices[0].message.content
            (sent,) = httpx.get(f"{simulator}/_sim/requests?limit=1").json()
            turn = sent["body"]["messages"][1]
            assert turn["role"] == "assistant"
            assert [b["type"] for b in turn["content"]] == ["thinking", "tool_use"]
            assert turn["content"][0] == block
        bare = {**history[1], "thinking_blocks": []}
        refused = gw.http().post("/v1/chat/completions", json={
            "model": "claude", "messages": [*USER, bare, history[2]], "max_tokens": 2048,
            "tools": [WEATHER], **THINKING})
        assert refused.status_code == 400
        assert refused.json()["error"]["param"] == "messages[1].thinking_blocks"


def test_multi_step_tool_loop_needs_thinking_only_on_the_turns_first_message(
        run_gateway: GatewayFactory, simulator: str) -> None:
    """Claude thinks once per assistant turn: its second tool call (after a tool result) has no
    thinking_blocks, and a third request echoing every message as returned is answered; the
    turn's thinking reaches Anthropic on its first assistant message only."""
    with run_gateway(config(simulator)) as gw:
        client = gw.client()
        history: Any = list(USER)
        for step in range(2):
            message = client.chat.completions.create(
                model="claude", messages=history, max_tokens=2048, tools=[WEATHER],
                tool_choice="required", extra_body=THINKING).choices[0].message
            assistant = message.model_dump(exclude_none=True)
            assert bool(assistant.get("thinking_blocks")) == (step == 0)
            history += [assistant, {"role": "tool", "content": f"Sunny {step}",
                                    "tool_call_id": assistant["tool_calls"][0]["id"]}]
        reply = client.chat.completions.create(model="claude", messages=history,
                                               max_tokens=2048, tools=[WEATHER],
                                               extra_body=THINKING)
        assert reply.choices[0].message.content
        (sent,) = httpx.get(f"{simulator}/_sim/requests?limit=1").json()
        kinds = [[b["type"] for b in turn["content"]] for turn in sent["body"]["messages"][1:]]
        assert kinds == [["thinking", "tool_use"], ["tool_result"], ["tool_use"],
                             ["tool_result"]]
        bare = {**history[1], "thinking_blocks": []}
        refused = gw.http().post("/v1/chat/completions", json={
            "model": "claude", "messages": [*USER, bare, *history[2:]], "max_tokens": 2048,
            "tools": [WEATHER], **THINKING})
        assert refused.status_code == 400
        assert refused.json()["error"]["param"] == "messages[1].thinking_blocks"
