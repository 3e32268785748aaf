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
