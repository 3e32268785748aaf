"""A stream event's JSON (``app.providers.event_json``): a UTF-16 surrogate pair cut across two
events, as a JavaScript upstream sends one, comes out whole; lone surrogates never fail it."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any

import orjson
import pytest

from app import errors
from app.providers import anthropic
from app.providers.event_json import EventJson
from app.providers.http import SSEEvent

EMOJI = "\U0001f600"


def delta(text: str) -> str:
    """An OpenAI chunk with ``text`` as its content, written as JavaScript writes it (a lone
    surrogate as its ``\\uXXXX`` escape)."""
    return json.dumps({"choices": [{"index": 0, "delta": {"content": text}}]})


def content(chunk: dict[str, Any]) -> str:
    text: str = chunk["choices"][0]["delta"]["content"]
    orjson.dumps(chunk)  # the gateway writes it again: it must be text
    return text


def test_a_pair_cut_across_two_events_comes_out_whole_in_the_second() -> None:
    read = EventJson()
    assert [content(read(delta(text))) for text in ("hi \ud83d", "\ude00 there", "!")] == [
        "hi ", f"{EMOJI} there", "!"]


def test_a_pair_in_one_event_and_escaped_text_are_read_as_they_are() -> None:
    read = EventJson()
    assert content(read(delta(EMOJI))) == EMOJI
    assert content(read(r'{"choices":[{"delta":{"content":"\ud83d\ude00 \u00e9"}}]}')) \
        == f"{EMOJI} \u00e9"


@pytest.mark.parametrize(("texts", "expected"), [
    (["\ude00 low first"], ["\ufffd low first"]),
    (["a\ud83db"], ["a\ufffdb"]),
    (["a\ud83d", "no low half"], ["a", "no low half"]),
    (["a\ud83d", "b\ude00"], ["a", "b\ufffd"]),
], ids=["low-alone", "high-inside", "high-never-joined", "low-not-first"])
def test_a_lone_surrogate_is_never_an_error(texts: list[str], expected: list[str]) -> None:
    """Not text at all: U+FFFD in its place; a high half no low half follows is dropped."""
    read = EventJson()
    assert [content(read(delta(text))) for text in texts] == expected


@pytest.mark.parametrize(("data", "says"), [
    ('{"a": ', "invalid JSON"),
    ('{"a": "\\ud83d", ', "invalid JSON"),
    ('["\\ud83d"]', "not an object"),
    ("[1]", "not an object"),
])
def test_what_is_not_a_json_object_is_still_a_bad_answer(data: str, says: str) -> None:
    with pytest.raises(errors.BadUpstreamResponse) as raised:
        EventJson()(data)
    assert says in raised.value.message


async def test_a_translated_stream_joins_the_pair() -> None:
    """Anthropic's text deltas, read by the translated provider's stream: the character comes
    whole in the chunk of the event with its low half."""
    start = {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [], "usage": {"input_tokens": 5, "output_tokens": 1}}}
    events = [
        ("message_start", orjson.dumps(start).decode()),
        ("content_block_start", '{"type":"content_block_start","index":0,'
                                '"content_block":{"type":"text","text":""}}'),
        *[("content_block_delta", json.dumps({"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": text}}))
          for text in ("Hi \ud83d", "\ude00!")],
        ("message_delta", '{"type":"message_delta","delta":{"stop_reason":"end_turn"},'
                          '"usage":{"output_tokens":3}}'),
        ("message_stop", '{"type":"message_stop"}'),
    ]

    async def stream() -> AsyncGenerator[SSEEvent, None]:
        for name, data in events:
            yield SSEEvent(event=name, data=data)

    chunks = [chunk async for chunk in anthropic.translated_chunks(stream())]
    texts = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert "".join(t or "" for t in texts) == f"Hi {EMOJI}!"
    assert f"{EMOJI}!" in texts
