"""Bedrock Converse requests the simulator (as Bedrock) would refuse or silently misread: a
tool-call history continued without tools, and Converse-native fields merged or forwarded,
through a running gateway."""

# The gateway fixture lives in tests/providers/test_bedrock_gateway.py: imported here so pytest
# finds it, and then named by each test's parameter (which ruff reads as a redefinition).
# ruff: noqa: F811

from __future__ import annotations

from typing import Any

from openai.types.chat import ChatCompletionMessageParam

from tests.api.conftest import GatewayFactory
from tests.providers.test_bedrock_gateway import (  # noqa: F401 - a fixture, used by name
    config,
    run_gateway,
    sim_requests,
)

HISTORY: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "toolu_1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "toolu_2", "type": "function",
         "function": {"name": "get_time", "arguments": "{}"}},
        {"id": "toolu_3", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Lyon"}'}}]},
    {"role": "tool", "tool_call_id": "toolu_1", "content": "rain"},
    {"role": "tool", "tool_call_id": "toolu_2", "content": "noon"},
    {"role": "tool", "tool_call_id": "toolu_3", "content": "sun"},
]


def test_tool_history_without_tools_declares_the_history_tools(run_gateway: GatewayFactory,
                                                               simulator: str) -> None:
    """A tool-call history continued without ``tools`` (a final answer) is served: the tools
    it called are declared once each, with an open schema, as Converse requires."""
    with run_gateway(config(simulator)) as gw:
        reply = gw.client().chat.completions.create(model="claude", messages=HISTORY,
                                                    max_tokens=20)
        (sent,) = sim_requests(simulator, 1)
    assert reply.choices[0].message.content
    tools: Any = sent["body"]["toolConfig"]["tools"]
    assert [t["toolSpec"]["name"] for t in tools] == ["get_weather", "get_time"]
    assert tools[0]["toolSpec"]["inputSchema"] == {"json": {"type": "object"}}
    assert "toolChoice" not in sent["body"]["toolConfig"]


SCHEMA: Any = {"type": "json_schema", "json_schema": {"name": "tide", "schema": {
    "type": "object", "properties": {"height": {"type": "number"}}, "required": ["height"]}}}
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Tell me about tides"}]


def test_effort_is_kept_beside_a_json_schema(run_gateway: GatewayFactory,
                                             simulator: str) -> None:
    """A client's ``outputConfig.effort`` is merged with the ``textFormat`` a json_schema
    ``response_format`` makes, not replaced by it; alone, it is forwarded and answered."""
    with run_gateway(config(simulator)) as gw:
        client = gw.client()
        client.chat.completions.create(model="claude", messages=USER, response_format=SCHEMA,
                                       extra_body={"outputConfig": {"effort": "low"}})
        (sent,) = sim_requests(simulator, 1)
        assert sent["body"]["outputConfig"]["effort"] == "low"
        assert sent["body"]["outputConfig"]["textFormat"]["type"] == "json_schema"
        reply = client.chat.completions.create(model="claude", messages=USER, max_tokens=5,
                                               extra_body={"outputConfig": {"effort": "high"}})
        assert reply.choices[0].message.content
        (sent,) = sim_requests(simulator, 1)
        assert sent["body"]["outputConfig"] == {"effort": "high"}


def test_project_identifier_is_forwarded(run_gateway: GatewayFactory, simulator: str) -> None:
    """Converse's ``projectIdentifier`` (a ConverseRequest member) reaches Bedrock."""
    with run_gateway(config(simulator)) as gw:
        gw.client().chat.completions.create(model="claude", messages=USER, max_tokens=3,
                                            extra_body={"projectIdentifier": "proj-123"})
        (sent,) = sim_requests(simulator, 1)
    assert sent["body"]["projectIdentifier"] == "proj-123"
