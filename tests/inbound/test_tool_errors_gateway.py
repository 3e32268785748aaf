# ruff: noqa: F811  (pytest passes the imported run_gateway fixture by parameter name)
"""``/v1/messages``' ``tool_result`` with ``is_error: true``, translated for targets that are not
Anthropic's, end to end against the simulator (which shows what it received): the flag where
the target's format has one (Gemini's ``response.error``; Bedrock Converse's ``status`` on Nova
and Claude, for the chat form's marked text), the marked text elsewhere (an OpenAI-shaped
target, another Bedrock model)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.providers.tool_errors import TOOL_ERROR
from app.simulator.gemini import API_KEY as GEMINI_KEY
from tests.api.conftest import (  # noqa: F401 - run_gateway is a fixture, used by name
    GatewayFactory,
    RunningGateway,
    run_gateway,
)
from tests.inbound.test_messages_gateway import sdk
from tests.providers.test_bedrock_gateway import provider as bedrock_provider


@pytest.fixture
def gw(run_gateway: GatewayFactory, simulator: str) -> Iterator[RunningGateway]:
    raw = {
        "providers": {
            "sim": {"type": "openai", "base_url": simulator + "/v1", "api_key": "sk-s"},
            "google": {"type": "gemini", "api_key": GEMINI_KEY,
                       "base_url": simulator + "/gemini/v1beta"},
            "aws": bedrock_provider(simulator),
        },
        "models": {
            "gpt": {"targets": [{"provider": "sim", "model": "gpt-4o-mini"}]},
            "gem": {"targets": [{"provider": "google", "model": "gemini-2.5-flash"}]},
            "nova": {"targets": [{"provider": "aws", "model": "us.amazon.nova-lite-v1:0"}]},
            "llama": {"targets": [{"provider": "aws",
                                   "model": "meta.llama3-1-8b-instruct-v1:0"}]},
        },
        "drift": {"embedding": {"sample_rate": 0}},
        "retries": {"attempts": 0},
    }
    with run_gateway(raw) as running:
        yield running


def conversation(marker: str, *, is_error: bool | None) -> list[dict[str, Any]]:
    """A tool call of ``lookup`` and its result (``is_error`` as given; None: left out)."""
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": "toolu_01",
                              "content": [{"type": "text", "text": f"disk full {marker}"}]}
    if is_error is not None:
        result["is_error"] = is_error
    return [{"role": "user", "content": f"look it up {marker}"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01",
                                               "name": "lookup", "input": {"q": "x"}}]},
            {"role": "user", "content": [result]}]


def received(simulator: str, marker: str) -> Any:
    """The body of the one request the simulator got holding ``marker``."""
    entries = httpx.get(simulator + "/_sim/requests").json()
    bodies = [e["body"] for e in entries if marker in str(e["body"])]
    assert len(bodies) == 1
    return bodies[0]


TOOLS = [{"name": "lookup", "description": "looks up", "input_schema": {
    "type": "object", "properties": {"q": {"type": "string"}}}}]


def send(gw: RunningGateway, model: str, marker: str, *, is_error: bool | None) -> None:
    reply = sdk(gw).messages.create(model=model, max_tokens=20, tools=TOOLS,
                                    messages=conversation(marker, is_error=is_error))
    assert reply.type == "message"


@pytest.mark.parametrize("is_error", [True, False, None], ids=["error", "ok", "unset"])
def test_openai_shaped_target_gets_the_marked_text(gw: RunningGateway, simulator: str,
                                                   is_error: bool | None) -> None:
    marker = uuid.uuid4().hex
    send(gw, "gpt", marker, is_error=is_error)
    tool = [m for m in received(simulator, marker)["messages"] if m["role"] == "tool"]
    expected = f"disk full {marker}"
    assert tool == [{"role": "tool", "tool_call_id": "toolu_01",
                     "content": f"{TOOL_ERROR} {expected}" if is_error else expected}]


@pytest.mark.parametrize("is_error", [True, False], ids=["error", "ok"])
def test_gemini_gets_response_error(gw: RunningGateway, simulator: str,
                                    is_error: bool) -> None:
    marker = uuid.uuid4().hex
    send(gw, "gem", marker, is_error=is_error)
    parts = [p["functionResponse"] for c in received(simulator, marker)["contents"]
             for p in c["parts"] if "functionResponse" in p]
    assert len(parts) == 1 and parts[0]["name"] == "lookup"
    key = "error" if is_error else "output"
    assert parts[0]["response"] == {key: f"disk full {marker}"}


@pytest.mark.parametrize(("model", "is_error"), [("nova", True), ("nova", False),
                                                 ("llama", True)],
                         ids=["nova-error", "nova-ok", "llama-error"])
def test_bedrock_converse_status(gw: RunningGateway, simulator: str, model: str,
                                 is_error: bool) -> None:
    """``/v1/messages`` reaches Bedrock's Claude natively only; a chat client's tool message
    marked as a failure (what ``/v1/messages`` translates to) becomes ``status: "error"`` on
    Nova (and Claude), and stays marked text on another model."""
    marker = uuid.uuid4().hex
    text = f"disk full {marker}"
    gw.client().chat.completions.create(model=model, max_tokens=20, tools=[{
        "type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
        messages=[{"role": "user", "content": f"look it up {marker}"},
                  {"role": "assistant", "content": None, "tool_calls": [{
                      "id": "call_1", "type": "function",
                      "function": {"name": "lookup", "arguments": "{}"}}]},
                  {"role": "tool", "tool_call_id": "call_1",
                   "content": f"{TOOL_ERROR} {text}" if is_error else text}])
    results = [b["toolResult"] for m in received(simulator, marker)["messages"]
               for b in m["content"] if "toolResult" in b]
    assert len(results) == 1
    if model == "nova":
        assert results[0].get("status") == ("error" if is_error else None)
        assert results[0]["content"] == [{"text": text}]
    else:
        assert "status" not in results[0]
        assert results[0]["content"] == [{"text": f"{TOOL_ERROR} {text}"}]
