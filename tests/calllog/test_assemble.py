"""``StreamAnswer``: a streamed answer's chunks put together as the non-streamed answer reads
(what a streamed call's captured ``response_body`` holds)."""

from __future__ import annotations

from typing import Any

from app.calllog.assemble import StreamAnswer

BASE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "m"}


def chunk(*choices: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**BASE, "choices": list(choices), **fields}


def test_tool_calls_reasoning_and_choices_are_put_together() -> None:
    answer = StreamAnswer()
    for piece in [
        chunk({"index": 0, "delta": {"role": "assistant", "reasoning_content": "Let me "}},
              {"index": 1, "delta": {"role": "assistant", "content": "B"}}),
        chunk({"index": 0, "delta": {"reasoning_content": "look."}}),
        chunk({"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"ci"}}]}}),
        chunk({"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": "ty\": \"Oslo\"}"}}]}}),
        chunk({"index": 1, "delta": {"content": "ye"}, "finish_reason": "stop"}),
        chunk({"index": 0, "delta": {}, "finish_reason": "tool_calls"}),
        {**BASE, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 9,
                                          "total_tokens": 12}},
    ]:
        answer.add(piece)
    assert answer.body() == {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 7, "model": "m",
        "choices": [
            {"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "reasoning_content": "Let me look.", "content": None,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {
                    "name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]}},
            {"index": 1, "finish_reason": "stop",
             "message": {"role": "assistant", "content": "Bye"}},
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12},
    }


def test_a_stream_cut_short_keeps_what_came_with_the_usage_given() -> None:
    answer = StreamAnswer()
    answer.add({"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "text": "Once upon", "finish_reason": None}]})
    assert answer.body({"completion_tokens": 2}) == {
        "id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "text": "Once upon", "finish_reason": None}],
        "usage": {"completion_tokens": 2}}


def test_arguments_in_many_pieces_read_whole_and_leave_the_chunks_alone() -> None:
    """Arguments streamed a character a chunk (a 1.6 MB tool call comes in ~100,000 pieces:
    held as pieces, joined once) read whole; a legacy ``function_call`` too; the chunks sent
    to the client are not changed by being captured."""
    answer = StreamAnswer()
    text = '{"rows": [' + ", ".join(str(n) for n in range(3000)) + "]}"
    first = chunk({"index": 0, "delta": {"role": "assistant", "tool_calls": [
        {"index": 0, "id": "call_1", "type": "function",
         "function": {"name": "save", "arguments": text[0]}}]}})
    sent = repr(first)
    answer.add(first)
    for piece in text[1:]:
        answer.add(chunk({"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": piece}}]}}))
    answer.add(chunk({"index": 1, "delta": {"function_call": {"name": "f", "arguments": "{"}}}))
    answer.add(chunk({"index": 1, "delta": {"function_call": {"arguments": "}"}}}))
    body = answer.body()
    call = body["choices"][0]["message"]["tool_calls"][0]
    assert call == {"id": "call_1", "type": "function",
                    "function": {"name": "save", "arguments": text}}
    assert body["choices"][1]["message"]["function_call"] == {"name": "f", "arguments": "{}"}
    assert repr(first) == sent
    assert answer.body() == body  # reading it twice reads the same
