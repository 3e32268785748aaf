# The gateway fixture lives in tests/api/conftest.py, outside this directory: imported here so
# pytest finds it, and then named by each test's parameter (which ruff reads as a redefinition).
# ruff: noqa: F811
"""A tool call the model chose itself (``tool_choice`` ``auto`` or absent) comes back in
OpenAI's shape from every provider whose simulator answers it in its own published format:
Anthropic's ``tool_use`` block, Cohere's ``message.tool_calls``, Gemini's ``functionCall`` part
(Gemini API and Vertex AI), Bedrock Converse's ``toolUse`` and Claude on Vertex; streamed too.
After the tool's result the model answers in text, so agent loops end."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from app.simulator.aws_auth import TEST_ACCESS_KEY, TEST_SECRET_KEY
from app.simulator.gemini import API_KEY
from tests.api.conftest import (  # noqa: F401 - run_gateway is a fixture, used by name
    GatewayFactory,
    run_gateway,
    sim_config,
)

USER: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the weather in Paris today?"}]
LOOKUP: ChatCompletionToolParam = {"type": "function", "function": {
    "name": "lookup", "description": "Look a word up in the dictionary",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}
WEATHER: ChatCompletionToolParam = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather forecast for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
TOOLS = [LOOKUP, WEATHER]  # the matching one second: the pick is by the question, not the order
KINDS = ["anthropic", "cohere", "gemini", "vertex", "vertex_anthropic", "bedrock"]


@pytest.fixture(scope="module")
def credentials_json(simulator: str) -> str:
    """A throwaway service-account key whose token endpoint is the simulator's."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return orjson.dumps({
        "type": "service_account", "project_id": "sim-project", "private_key_id": "k1",
        "private_key": pem, "client_email": "gw@sim-project.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": f"{simulator}/vertex/token"}).decode()


def config(simulator: str, kind: str, credentials_json: str) -> dict[str, Any]:
    """Model ``chat`` on one provider of type ``kind``, pointed at the simulator."""
    providers: dict[str, dict[str, Any]] = {
        "anthropic": {"type": "anthropic", "base_url": simulator, "api_key": "sk-ant-x"},
        "cohere": {"type": "cohere", "base_url": simulator, "api_key": "co-x"},
        "gemini": {"type": "gemini", "api_key": API_KEY,
                   "base_url": simulator + "/gemini/v1beta"},
        "vertex": {"type": "vertex", "project": "sim-project", "location": "us-central1",
                   "base_url": simulator + "/vertex/v1", "credentials_json": credentials_json},
        "vertex_anthropic": {"type": "vertex_anthropic", "project": "sim-project",
                             "location": "us-east5", "base_url": simulator + "/vertex/v1",
                             "credentials_json": credentials_json},
        "bedrock": {"type": "bedrock", "region": "us-east-1", "base_url": simulator + "/bedrock",
                    "access_key_id": TEST_ACCESS_KEY, "secret_access_key": TEST_SECRET_KEY},
    }
    models = {"anthropic": "claude-sonnet-4-5", "cohere": "command-r-08-2024",
              "gemini": "gemini-2.5-flash", "vertex": "gemini-2.5-flash",
              "vertex_anthropic": "claude-sonnet-4@20250514",
              "bedrock": "anthropic.claude-3-5-haiku-20241022-v1:0"}
    raw = sim_config(simulator, chat={"targets": [{"provider": "up", "model": models[kind]}]})
    raw["providers"]["up"] = providers[kind]
    return raw


@pytest.mark.parametrize("kind", KINDS)
def test_the_model_calls_a_tool_on_its_own(run_gateway: GatewayFactory, simulator: str,
                                           credentials_json: str, kind: str) -> None:
    """With tools and tool_choice auto or absent, the answer is one OpenAI tool call to the
    tool matching the question (finish_reason tool_calls, JSON arguments), plain and
    streamed."""
    with run_gateway(config(simulator, kind, credentials_json)) as gw:
        client = gw.client()
        for choice in ({"tool_choice": "auto"}, {}):
            reply = client.chat.completions.create(model="chat", messages=USER, tools=TOOLS,
                                                   **choice)  # type: ignore[call-overload]
            message = reply.choices[0].message
            assert reply.choices[0].finish_reason == "tool_calls", (kind, choice)
            assert message.tool_calls and len(message.tool_calls) == 1
            call = message.tool_calls[0]
            assert call.type == "function" and call.id
            assert call.function.name == "get_weather"
            assert json.loads(call.function.arguments) == {"city": ""}
            chunks = list(client.chat.completions.create(
                model="chat", messages=USER, tools=TOOLS, stream=True,
                **choice))  # type: ignore[call-overload]
            deltas = [d for c in chunks if c.choices
                      for d in c.choices[0].delta.tool_calls or ()]
            assert deltas and deltas[0].id and deltas[0].function is not None
            assert deltas[0].function.name == "get_weather"
            arguments = "".join(d.function.arguments or "" for d in deltas if d.function)
            assert json.loads(arguments) == {"city": ""}
            finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
            assert finishes[-1] == "tool_calls"
            # Cohere's tool_plan, what the model says before calling, is the message's content.
            said = "I will use get_weather." if kind == "cohere" else ""
            assert (message.content or "") == said
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == said


@pytest.mark.parametrize("kind", KINDS)
def test_after_the_tool_result_the_answer_is_text(run_gateway: GatewayFactory, simulator: str,
                                                  credentials_json: str, kind: str) -> None:
    """Given the tool's result, the model answers in text (finish_reason stop), so an agent
    loop ends."""
    turns: list[ChatCompletionMessageParam] = [
        *USER,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 C"}]
    with run_gateway(config(simulator, kind, credentials_json)) as gw:
        reply = gw.client().chat.completions.create(model="chat", messages=turns, tools=TOOLS,
                                                    tool_choice="auto")
        assert reply.choices[0].finish_reason == "stop", kind
        assert reply.choices[0].message.content and not reply.choices[0].message.tool_calls
