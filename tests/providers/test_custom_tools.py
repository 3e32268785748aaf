"""OpenAI's custom tools, and output a translation cannot give (audio, web search).

The gateway accepts custom tools (``{"type": "custom", "custom": {...}}``) and custom tool calls
in an assistant's history, as OpenAI does; every provider that translates the request, or
whose server takes function tools only (vLLM, TGI), refuses them with a 400 naming the
parameter, and refuses ``modalities`` with audio, ``audio`` and ``web_search_options`` alike
(``app.providers.refusals``), so a model's other target (an OpenAI one) serves the call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest

from app import errors
from app.answers import other_text
from app.api.wire import parse
from app.providers import (
    ai21_request,
    anthropic_request,
    bedrock_converse,
    cohere_request,
    gemini_request,
    vllm,
)
from app.providers.base import ChatCall, Json, Target
from app.providers.huggingface_tgi import tgi_chat_payload
from app.providers.mock_answer import chat_answer
from app.providers.replicate_input import FAMILIES, InputSpec, build_input
from app.schemas import ChatRequest, CustomTool, CustomToolCall

ASK: Json = {"role": "user", "content": "run the code"}
CUSTOM_TOOL: Json = {"type": "custom", "custom": {
    "name": "code_exec", "description": "Runs Python",
    "format": {"type": "grammar", "grammar": {"definition": "start: /.+/", "syntax": "lark"}}}}
WEATHER: Json = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}
CUSTOM_CALL: Json = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_1", "type": "function",
     "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
    {"id": "call_2", "type": "custom", "custom": {"name": "code_exec", "input": "print(1)"}}]}
TARGET = Target(provider="p", model="m")


def _call(body: Json) -> ChatCall:
    body = {"model": "m", **body}
    return ChatCall(request=parse(ChatRequest, body), body=body)


def _vllm(call: ChatCall) -> object:
    """vLLM's payload preparation (its dialect fixed: no upstream is asked anything)."""
    server = vllm.VllmServer(cast(Any, None), max_tokens_default=64, dialect="guided",
                             probe=cast(Any, None))
    return server.prepare(dict(call.body), target=TARGET, stream=False)


TRANSLATIONS: dict[str, Callable[[ChatCall], object]] = {
    "anthropic": lambda c: anthropic_request.translate_request(
        c, target=TARGET, max_tokens_default=64, stream=False),
    "gemini": lambda c: gemini_request.translate_request(c, target=TARGET),
    "bedrock": lambda c: bedrock_converse.translate_request(
        c, target=TARGET, max_tokens_default=None),
    "cohere": lambda c: cohere_request.translate_request(c, target=TARGET, stream=False),
    "ai21": lambda c: ai21_request.translate_request(c, target=TARGET, stream=False),
    "mock": lambda c: chat_answer(c.request),
    "tgi": lambda c: tgi_chat_payload(dict(c.body)),
    "vllm": _vllm,
}
EACH = pytest.mark.parametrize("name", list(TRANSLATIONS))


def refused(name: str, body: Json) -> errors.InvalidRequest:
    with pytest.raises(errors.InvalidRequest) as caught:
        TRANSLATIONS[name](_call(body))
    return caught.value


def test_custom_tools_and_custom_calls_are_valid_requests() -> None:
    """The shapes of the openai SDK's ``ChatCompletionCustomToolParam`` and
    ``ChatCompletionMessageCustomToolCallParam`` validate; a function call without ``type``
    is still a function call."""
    request = _call({"messages": [ASK, CUSTOM_CALL, {"role": "tool", "tool_call_id": "call_2",
                                                     "content": "1"}],
                     "tools": [WEATHER, CUSTOM_TOOL, {"type": "custom",
                                                      "custom": {"name": "bare"}}],
                     "tool_choice": {"type": "custom", "custom": {"name": "code_exec"}}}).request
    assert request.tools is not None and isinstance(request.tools[1], CustomTool)
    calls = request.messages[1].tool_calls
    assert calls is not None and isinstance(calls[1], CustomToolCall)
    assert calls[1].custom.input == "print(1)"
    untyped = _call({"messages": [ASK, {"role": "assistant", "tool_calls": [
        {"id": "c", "function": {"name": "f", "arguments": "{}"}}]}]}).request
    assert untyped.messages[1].tool_calls is not None
    assert untyped.messages[1].tool_calls[0].type == "function"


@pytest.mark.parametrize(("body", "param"), [
    ({"tools": [{"type": "custom", "custom": {}}]}, "tools[0].custom.name"),
    ({"tools": [{"type": "custom", "function": {"name": "f"}}]}, "tools[0].custom"),
    ({"tools": [{"type": "other", "function": {"name": "f"}}]}, "tools[0].type"),
    ({"messages": [ASK, {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "custom", "custom": {"name": "f"}}]}]},
     "messages[1].tool_calls[0].custom.input"),
])
def test_malformed_custom_tools_name_their_field(body: Json, param: str) -> None:
    with pytest.raises(errors.InvalidRequest) as caught:
        _call({"messages": [ASK], **body})
    assert caught.value.param == param


@EACH
def test_custom_tool_is_refused_naming_it(name: str) -> None:
    err = refused(name, {"messages": [ASK], "tools": [WEATHER, CUSTOM_TOOL]})
    assert err.param == "tools[1].type" and "custom tools" in err.message


@EACH
def test_custom_tool_call_in_history_is_refused_naming_it(name: str) -> None:
    err = refused(name, {"messages": [ASK, CUSTOM_CALL,
                                      {"role": "tool", "tool_call_id": "call_1", "content": "9"},
                                      {"role": "tool", "tool_call_id": "call_2", "content": "1"}],
                         "tools": [WEATHER]})
    assert err.param == "messages[1].tool_calls[1].type"


@EACH
@pytest.mark.parametrize(("field", "value"), [
    ("modalities", ["text", "audio"]), ("audio", {"voice": "alloy", "format": "wav"}),
    ("web_search_options", {})])
def test_audio_and_web_search_are_refused_naming_them(name: str, field: str,
                                                      value: Any) -> None:
    err = refused(name, {"messages": [ASK], field: value})
    assert err.param == field


@EACH
def test_text_modality_alone_is_accepted(name: str) -> None:
    TRANSLATIONS[name](_call({"messages": [ASK], "modalities": ["text"]}))


@pytest.mark.parametrize("field", ["tools", "modalities", "audio", "web_search_options"])
def test_replicate_refuses_tools_audio_and_web_search(field: str) -> None:
    value = {"tools": [CUSTOM_TOOL], "modalities": ["audio"], "audio": {"voice": "alloy"},
             "web_search_options": {}}[field]
    with pytest.raises(errors.InvalidRequest) as caught:
        build_input(_call({"messages": [ASK], field: value}).request,
                    InputSpec(FAMILIES["gpt"], "gpt"), params={}, max_tokens_default=None)
    assert caught.value.param == field


@pytest.mark.parametrize("name", ["anthropic", "gemini", "bedrock", "cohere", "ai21", "mock"])
def test_required_tool_choice_without_tools_is_refused(name: str) -> None:
    """As OpenAI answers it: a call that must call a tool is offered none."""
    err = refused(name, {"messages": [ASK], "tool_choice": "required"})
    assert err.param == "tool_choice"


def test_custom_tool_call_text_counts_as_generated() -> None:
    """A custom tool call's name and input are what the model generated (the estimate of
    completion tokens when no usage comes)."""
    into: list[str] = []
    other_text({"tool_calls": [{"index": 0, "type": "custom",
                                "custom": {"name": "code_exec", "input": "print(1)"}}]}, into)
    assert into == ["code_exec", "print(1)"]
