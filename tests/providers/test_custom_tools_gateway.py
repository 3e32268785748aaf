# ruff: noqa: F811  (pytest passes the imported fixtures by parameter name)
"""Custom tools end to end: forwarded as sent to an OpenAI target (unary and streamed, custom
tool calls in history too), refused by a translating target with a 400 naming the parameter,
which falls back to the model's OpenAI target; audio output alike; under redaction, a custom
tool call's input is screened on the way up and restored on the way back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from openai.types.chat import ChatCompletionMessageCustomToolCall

from tests.api.conftest import (  # noqa: F401  (run_gateway: the fixture, used by name)
    GatewayFactory,
    RunningGateway,
    run_gateway,
    sim_config,
)
from tests.privacy.test_gateway import (  # noqa: F401  (upstream: the fixture, used by name)
    EMAIL,
    Upstream,
    upstream,
)

TOOL: dict[str, Any] = {"type": "custom", "custom": {
    "name": "code_exec", "description": "Runs Python code",
    "format": {"type": "grammar", "grammar": {"definition": "start: /.+/", "syntax": "lark"}}}}
CLAUDE = {"provider": "claude", "model": "claude-sonnet-4-5"}
GPT = {"provider": "sim", "model": "gpt-4o-mini"}


@pytest.fixture
def gw(run_gateway: GatewayFactory, simulator: str) -> Iterator[RunningGateway]:
    raw = sim_config(simulator, gpt={"targets": [GPT]}, claude={"targets": [CLAUDE]},
                     either={"targets": [CLAUDE, GPT]},
                     redacted={"targets": [GPT], "privacy": {"action": "redact"}})
    raw["providers"]["claude"] = {"type": "anthropic", "base_url": simulator,
                                  "api_key": "sk-ant-secret"}
    with run_gateway(raw) as running:
        yield running


def ask(marker: str, text: str = "run the code") -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"{text} {marker}"}]


def streamed_calls(gw: RunningGateway, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool call deltas of a streamed chat answer, in order (raw JSON: the SDK's chunk
    types know function deltas only)."""
    deltas: list[dict[str, Any]] = []
    with gw.http().stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as got:
        assert got.status_code == 200, got.read()
        for line in got.iter_lines():
            if line.startswith("data: {"):
                for choice in orjson.loads(line[6:]).get("choices") or ():
                    deltas.extend(choice.get("delta", {}).get("tool_calls") or ())
    return deltas


def test_custom_tool_goes_to_an_openai_target_as_sent(gw: RunningGateway,
                                                      upstream: Upstream) -> None:
    """A custom tool reaches the OpenAI target unchanged and its custom tool call comes back;
    the conversation goes on with that call in its history."""
    messages = ask(upstream.marker)
    asked: dict[str, Any] = {"model": "gpt", "messages": messages, "tools": [TOOL],
                             "tool_choice": {"type": "custom", "custom": {"name": "code_exec"}}}
    calls = gw.client().chat.completions.create(**asked).choices[0].message.tool_calls
    assert calls is not None
    call = calls[0]
    assert isinstance(call, ChatCompletionMessageCustomToolCall)
    assert call.custom.name == "code_exec"
    assert upstream.marker in call.custom.input
    sent = upstream.received()[0]["body"]
    assert sent["tools"] == [TOOL]
    assert sent["tool_choice"] == {"type": "custom", "custom": {"name": "code_exec"}}
    history = [*messages, {"role": "assistant", "content": None, "tool_calls": [
        {"id": call.id, "type": "custom", "custom": {"name": "code_exec",
                                                     "input": call.custom.input}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "1"}]
    more: dict[str, Any] = {"model": "gpt", "messages": history, "tools": [TOOL]}
    after = gw.client().chat.completions.create(**more)
    assert after.choices[0].finish_reason == "stop"
    assert upstream.received()[1]["body"]["messages"] == history


def test_custom_tool_call_streams_through(gw: RunningGateway, upstream: Upstream) -> None:
    """A streamed custom tool call: its name first, then its input piece by piece."""
    deltas = streamed_calls(gw, {"model": "gpt", "messages": ask(upstream.marker),
                                 "tools": [TOOL], "tool_choice": "required"})
    assert deltas[0]["type"] == "custom" and deltas[0]["custom"]["name"] == "code_exec"
    text = "".join(d["custom"]["input"] for d in deltas)
    assert text.startswith("code_exec input for: run the code") and upstream.marker in text


@pytest.mark.parametrize(("extra", "param"), [
    ({"tools": [TOOL]}, "tools[0].type"),
    ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}},
     "modalities"),
    ({"web_search_options": {}}, "web_search_options"),
    ({"tool_choice": "required"}, "tool_choice"),
])
def test_translating_target_refuses_and_the_openai_target_serves(
        gw: RunningGateway, upstream: Upstream, extra: dict[str, Any], param: str) -> None:
    """A Claude-only model answers a 400 naming the parameter and sends nothing; a model with
    an OpenAI target after Claude is served by it."""
    body = {"messages": ask(upstream.marker), **extra}
    refused = gw.http().post("/v1/chat/completions", json={"model": "claude", **body})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert upstream.received() == []
    if param == "tool_choice":
        return  # OpenAI refuses it too
    served = gw.http().post("/v1/chat/completions", json={"model": "either", **body})
    assert served.status_code == 200, served.text
    assert served.json()["model"] == "gpt-4o-mini"


@pytest.mark.parametrize("streamed", [False, True])
def test_custom_tool_input_is_redacted_and_restored(gw: RunningGateway, upstream: Upstream,
                                                   streamed: bool) -> None:
    """Under redaction, an earlier custom call's input goes up placeholdered, as function
    arguments do; the answer's custom input (which echoes the user's text) comes back with
    the value."""
    messages = [{"role": "user", "content": f"mail {EMAIL} {upstream.marker}"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "custom",
                     "custom": {"name": "code_exec", "input": f"send('{EMAIL}')"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "sent"},
                {"role": "user", "content": f"again to {EMAIL}"}]
    body = {"model": "redacted", "messages": messages, "tools": [TOOL],
            "tool_choice": "required"}
    if streamed:
        text = "".join(d["custom"]["input"] for d in streamed_calls(gw, body))
    else:
        answer = gw.http().post("/v1/chat/completions", json=body)
        assert answer.status_code == 200, answer.text
        text = answer.json()["choices"][0]["message"]["tool_calls"][0]["custom"]["input"]
    assert text == f"code_exec input for: again to {EMAIL}"
    sent = upstream.received()[0]["body"]["messages"]
    assert sent[1]["tool_calls"][0]["custom"]["input"] == "send('<EMAIL_1>')"
    upstream.assert_never_saw_planted()
