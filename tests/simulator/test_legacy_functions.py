"""The OpenAI dialect's legacy ``functions``/``function_call`` (before ``tools``), through the
official SDK: answered with ``message.function_call``, streamed as ``delta.function_call``."""

from __future__ import annotations

from typing import Any

import openai
import orjson
import pytest

MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the weather in Oslo"}]
FUNCTIONS: list[dict[str, Any]] = [
    {"name": "get_time", "description": "the time", "parameters": {"type": "object"}},
    {"name": "get_weather", "description": "the weather in a city", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "const": "Oslo"}},
        "required": ["city"]}}]


def create(oai: openai.OpenAI, **extra: Any) -> Any:
    return oai.chat.completions.create(model="m", messages=MESSAGES,
                                       extra_body={"functions": FUNCTIONS, **extra})


@pytest.mark.parametrize("choice", [None, "auto", {"name": "get_weather"}],
                         ids=["absent", "auto", "named"])
def test_function_call_answer(oai: openai.OpenAI, choice: Any) -> None:
    """Functions without tools: the answer calls one in ``message.function_call`` (the named
    one, or the best match), finishing with ``function_call``; no ``tool_calls``."""
    answer = create(oai, **({} if choice is None else {"function_call": choice}))
    message = answer.choices[0].message
    assert answer.choices[0].finish_reason == "function_call"
    assert message.content is None and message.tool_calls is None
    assert message.function_call is not None and message.function_call.name == "get_weather"
    assert orjson.loads(message.function_call.arguments) == {"city": "Oslo"}


def test_function_call_none_and_unknown(oai: openai.OpenAI) -> None:
    """``function_call: "none"`` answers in text; naming a function not listed is a 400."""
    assert create(oai, function_call="none").choices[0].message.function_call is None
    with pytest.raises(openai.BadRequestError):
        create(oai, function_call={"name": "nope"})


def test_function_call_stream(oai: openai.OpenAI) -> None:
    """Streamed: the name comes first with empty arguments, then the arguments piece by piece
    in ``delta.function_call``; the last choice finishes with ``function_call``."""
    chunks = list(oai.chat.completions.create(
        model="m", messages=MESSAGES, stream=True,
        extra_body={"functions": FUNCTIONS, "function_call": {"name": "get_weather"}}))
    first = chunks[0].choices[0].delta.function_call
    assert first is not None and first.name == "get_weather" and first.arguments == ""
    pieces = [c.choices[0].delta.function_call.arguments or "" for c in chunks[1:]
              if c.choices and c.choices[0].delta.function_call]
    assert len(pieces) > 1 and orjson.loads("".join(pieces)) == {"city": "Oslo"}
    assert chunks[-1].choices[0].finish_reason == "function_call"
