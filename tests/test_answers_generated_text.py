"""What the token estimate of an answer without usage counts: all the model generated (text,
refusal, reasoning, tool calls' names and arguments, a legacy function_call), while the answer
text that drift and ``judge`` read stays the content alone."""

from __future__ import annotations

from typing import Any

import pytest

from app.answers import body_text, chunk_text, generated_text

ARGUMENTS = '{"city": "Paris", "days": 3}'


def delta_chunk(delta: dict[str, Any]) -> dict[str, Any]:
    return {"object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}


@pytest.mark.parametrize(("delta", "other"), [
    ({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                      "function": {"name": "get_weather", "arguments": ""}}]},
     ["get_weather"]),
    ({"tool_calls": [{"index": 0, "function": {"arguments": ARGUMENTS}}]}, [ARGUMENTS]),
    ({"function_call": {"name": "get_weather", "arguments": ARGUMENTS}},
     ["get_weather", ARGUMENTS]),
    ({"refusal": "I can't help with that."}, ["I can't help with that."]),
    ({"reasoning_content": "First, the city."}, ["First, the city."]),
    ({"reasoning": "First, the city."}, ["First, the city."]),
    ({"role": "assistant", "content": "Hi", "refusal": None}, []),
    ({"content": "Hi"}, []),
], ids=["tool-name", "tool-arguments", "function-call", "refusal", "reasoning-content",
        "reasoning", "content-and-null-refusal", "content"])
def test_chunk_text_gives_the_rest_of_a_delta_to_other(delta: dict[str, Any],
                                                       other: list[str]) -> None:
    """A delta's generated text besides its content goes to ``other``; its content alone is the
    chunk's text."""
    got: list[str] = []
    text = chunk_text(delta_chunk(delta), got)
    assert text == (delta.get("content") or "")
    assert got == other


def test_chunk_text_without_other_is_the_content() -> None:
    """Called with one argument, a tool-call chunk has no text and nothing fails."""
    assert chunk_text(delta_chunk({"tool_calls": [{"index": 0, "function": {
        "arguments": ARGUMENTS}}]})) == ""


def test_generated_text_of_a_tool_call_answer_counts_its_call() -> None:
    """A non-streamed tool call's name and arguments (and reasoning) are its generated text;
    ``body_text``, what drift and ``judge`` read, stays its (absent) content."""
    body = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "reasoning_content": "Weather: call the tool.",
        "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": ARGUMENTS}}]}}]}
    assert body_text(body) == ""
    generated = generated_text(body)
    for part in ("get_weather", ARGUMENTS, "Weather: call the tool."):
        assert part in generated


def test_generated_text_of_a_text_answer_is_its_text() -> None:
    """Content and completions' text count as before."""
    chat = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"}}]}
    completion = {"choices": [{"index": 0, "text": "Hello there"}]}
    assert generated_text(chat).strip() == generated_text(completion).strip() == "Hello there"
