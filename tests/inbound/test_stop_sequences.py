"""A translated answer's ``stop_reason: "stop_sequence"``, from a choice's ``stop_reason`` (vLLM's
way of naming the stop sequence that ended it), without I/O."""

from __future__ import annotations

from typing import Any

import orjson

from app.inbound.anthropic import to_message
from app.inbound.anthropic_stream import EventWriter


def test_a_choices_stop_reason_names_the_sequence() -> None:
    """A choice whose ``stop_reason`` (vLLM's) is one of the request's stop sequences ended
    on it, in an answer and in a stream; one that is not (a token id, another string) does
    not."""
    def choice(said: Any) -> dict[str, Any]:
        return {"index": 0, "message": {"role": "assistant", "content": "x"},
                "delta": {"content": "x"}, "finish_reason": "stop", "stop_reason": said}

    for said, expected in (("END", ("stop_sequence", "END")), (128001, ("end_turn", None)),
                           ("other", ("end_turn", None)), (None, ("end_turn", None))):
        message = to_message({"choices": [choice(said)]}, None, model="m", stops=["END"])
        assert (message["stop_reason"], message["stop_sequence"]) == expected
        writer = EventWriter(model="m", prompt_tokens=lambda: 1, stops=["END"])
        writer.frame({"choices": [choice(said)]})
        closing = writer.close().decode()
        delta = orjson.loads(closing.split("event: message_delta\ndata: ")[1].split("\n")[0])
        assert (delta["delta"]["stop_reason"], delta["delta"]["stop_sequence"]) == expected


def test_a_streamed_refusal_keeps_its_stop_reason() -> None:
    """A stream whose text was a refusal ends with ``stop_reason: refusal``, as the answer
    does, not with the final chunk's ``finish_reason`` (``stop`` -> ``end_turn``)."""
    writer = EventWriter(model="m", prompt_tokens=lambda: 1, stops=[])
    writer.frame({"choices": [{"index": 0, "delta": {"refusal": "I can't help with that."},
                               "finish_reason": None}]})
    writer.frame({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    closing = writer.close().decode()
    delta = orjson.loads(closing.split("event: message_delta\ndata: ")[1].split("\n")[0])
    assert delta["delta"]["stop_reason"] == "refusal"
    answer = to_message({"choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": None, "refusal": "I can't help with that."}}]},
        None, model="m", stops=[])
    assert answer["stop_reason"] == "refusal"
