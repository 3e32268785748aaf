"""What the token estimate of an answer without usage counts: all the model generated (text,
refusal, reasoning, tool calls' names and arguments, a legacy function_call), while the answer
text that drift and ``judge`` read stays the content alone."""

from __future__ import annotations

from typing import Any

import pytest

from app.answers import Generated, body_text, generated_text
from app.usage import estimate_tokens

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
    generated = Generated()
    generated.add(delta_chunk(delta))
    assert generated.text() == (delta.get("content") or "")
    assert generated.others.get(0, []) == other


def test_a_tool_call_chunk_has_no_text() -> None:
    """A tool-call chunk adds to the rest, not the text, and nothing fails."""
    generated = Generated()
    generated.add(delta_chunk({"tool_calls": [{"index": 0, "function": {
        "arguments": ARGUMENTS}}]}))
    assert generated.text() == "" and generated.chars == 0
    assert generated.tokens() == estimate_tokens(ARGUMENTS)


def test_choices_of_a_stream_are_estimated_each_on_its_own() -> None:
    """n choices interleave their pieces: each choice's text is estimated on its own (joined,
    "Simulated" three times would be one long word, 5 tokens for 6), and the answer text is
    choice after choice, as ``body_text`` reads a whole answer."""
    generated = Generated()
    for piece in ("Simulated", " reply"):
        for index in range(3):
            generated.add({"choices": [{"index": index, "delta": {"content": piece},
                                        "finish_reason": None}]})
    assert generated.tokens() == 3 * estimate_tokens("Simulated reply") == 9
    assert generated.text() == "Simulated reply" * 3
    completions = Generated()
    completions.add({"choices": [{"index": 0, "text": "Simulated"},
                                 {"index": 1, "text": "Simulated"}]})
    completions.add({"choices": [{"index": "odd", "text": " reply"}]})  # read as choice 0
    assert completions.tokens() == estimate_tokens("Simulated reply") + 2


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
