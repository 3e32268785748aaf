"""Every provider type behind the gateway, through the OpenAI SDK, against the simulator."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.api.conftest import GatewayFactory

USER: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Tell me about switchboards"},
]


def config(simulator: str) -> dict[str, Any]:
    return {
        "providers": {
            "gpu": {"type": "vllm", "base_url": simulator + "/v1", "max_tokens_default": 64},
            "claude": {"type": "anthropic", "base_url": simulator, "api_key": "sk-ant-secret"},
            "azure": {"type": "azure_openai", "endpoint": simulator, "api_key": "az-secret"},
        },
        "models": {
            "llama": {"targets": [{"provider": "gpu", "model": "meta-llama/Llama-3.1-8B"}]},
            "claude": {"targets": [{"provider": "claude", "model": "claude-sonnet-4-20250514"}]},
            "azure": {"targets": [{"provider": "azure", "model": "my-deployment"}]},
        },
    }


@pytest.mark.parametrize("model", ["llama", "claude", "azure"])
def test_chat_and_stream_through_each_provider(run_gateway: GatewayFactory, simulator: str,
                                               model: str) -> None:
    """Non-streaming and streaming chat work the same through vLLM, Anthropic and Azure."""
    with run_gateway(config(simulator)) as gw:
        client = gw.client()
        reply = client.chat.completions.create(model=model, messages=USER, max_tokens=20)
        assert reply.choices[0].message.content
        assert reply.choices[0].finish_reason in {"stop", "length"}
        assert reply.usage is not None and reply.usage.prompt_tokens > 0
        chunks = list(client.chat.completions.create(
            model=model, messages=USER, max_tokens=20, stream=True,
            stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
        costs = [r.cost_usd for r in gw.sink.records]
        if model == "claude":
            assert all(c is not None and c > 0 for c in costs), costs


def test_anthropic_tools_round_trip(run_gateway: GatewayFactory, simulator: str) -> None:
    """An OpenAI tool call made through an Anthropic target comes back as tool_calls."""
    with run_gateway(config(simulator)) as gw:
        reply = gw.client().chat.completions.create(
            model="claude", messages=USER, tool_choice="required",
            tools=[{"type": "function", "function": {
                "name": "lookup", "parameters": {"type": "object", "properties": {
                    "q": {"type": "string"}}, "required": ["q"]}}}])
        calls = reply.choices[0].message.tool_calls
        assert reply.choices[0].finish_reason == "tool_calls"
        assert calls and calls[0].type == "function" and calls[0].function.name == "lookup"
