"""The verdicts the gateway gives an answer (``app.answers``): a refusal, by the provider's word
or by a phrase, and whether an answer to a JSON request parses."""

from __future__ import annotations

from typing import Any

import pytest

from app.answers import judge, observe_finish
from app.calllog import CallRecord
from app.config import DEFAULT_REFUSAL_PHRASES
from app.providers.anthropic_response import to_chat_completion
from app.providers.base import Json
from app.schemas import ChatRequest
from tests.providers.test_anthropic import TEXT_EVENTS, feed_all, message_body

SORRY = "I'm sorry, but I can't help with that."
VALID = '{"city": "Oslo"}'


def record(*, wants_json: bool = False) -> CallRecord:
    made = CallRecord(id="r", endpoint="/v1/chat/completions", caller="t")
    made.wants_json = wants_json
    return made


def answer(message: Json, finish: str = "stop") -> Json:
    return {"object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", **message},
                         "finish_reason": finish}]}


def chunk(delta: Json, finish: str | None = None) -> Json:
    return {"object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def verdicts(made: CallRecord, text: str, *, scan_chars: int = 200) -> tuple[Any, Any]:
    judge(made, text, phrases=DEFAULT_REFUSAL_PHRASES, scan_chars=scan_chars)
    return made.refusal, made.json_valid


def test_openai_refusal_field_marks_a_unary_answer() -> None:
    """A structured-output refusal (``message.refusal``, content null) is a refusal, and a JSON
    request it answers gets no JSON verdict: no JSON was due."""
    made = record(wants_json=True)
    observe_finish(made, answer({"content": None, "refusal": "I can't do that."}))
    assert made.refusal is True and made.finish_reason == "stop"
    assert verdicts(made, "") == (True, None)


def test_openai_refusal_deltas_mark_a_streamed_answer() -> None:
    """Streamed, the refusal arrives in ``delta.refusal`` after an empty opening one."""
    made = record(wants_json=True)
    for sent in (chunk({"role": "assistant", "content": None, "refusal": ""}),
                 chunk({"refusal": "I can't"}), chunk({"refusal": " do that."}),
                 chunk({}, "stop")):
        observe_finish(made, sent)
    assert verdicts(made, "") == (True, None)


@pytest.mark.parametrize("refusal", [None, ""])
def test_an_empty_or_null_refusal_field_is_no_refusal(refusal: str | None) -> None:
    """``refusal: null`` (every ordinary answer) or ``""`` (some providers beside tool calls)
    mark nothing."""
    made = record(wants_json=True)
    observe_finish(made, answer({"content": VALID, "refusal": refusal}))
    assert verdicts(made, VALID) == (False, True)


def test_content_filter_is_a_refusal_without_a_json_verdict() -> None:
    """``finish_reason: content_filter`` (the provider withheld the answer) is a refusal."""
    made = record(wants_json=True)
    observe_finish(made, answer({"content": '{"ci'}, finish="content_filter"))
    assert verdicts(made, '{"ci') == (True, None)


def test_anthropic_refusal_stop_reason_is_a_refusal_unary_and_streamed() -> None:
    """Anthropic's ``stop_reason: refusal`` becomes ``content_filter``, so a refusal, whether the
    answer came whole or as events."""
    body, _ = to_chat_completion(message_body(stop_reason="refusal"), created=0)
    unary = record()
    observe_finish(unary, body)
    assert verdicts(unary, "Hello there.") == (True, None)
    events = [*TEXT_EVENTS]
    events[-2] = {"type": "message_delta", "delta": {"stop_reason": "refusal"},
                  "usage": {"output_tokens": 15}}
    streamed = record()
    for sent in feed_all(events)[1]:
        observe_finish(streamed, sent)
    assert streamed.finish_reason == "content_filter"
    assert verdicts(streamed, "Hello") == (True, None)


def test_a_refusal_phrase_at_the_start_is_a_refusal() -> None:
    """A phrase of ``drift.refusal_phrases`` in the answer's head counts (any case, curly
    apostrophes too); past ``scan_chars`` it does not."""
    assert verdicts(record(), SORRY) == (True, None)
    assert verdicts(record(), "I\u2019M SORRY, BUT I CAN\u2019T help.") == (True, None)
    assert verdicts(record(), "x" * 300 + SORRY, scan_chars=200) == (False, None)
    assert verdicts(record(), "Oslo is the capital of Norway.") == (False, None)


def test_a_phrase_refusal_to_a_json_request_is_also_invalid_json() -> None:
    """Only the provider's own refusal spares the JSON verdict: prose where JSON was asked for
    does not parse, whatever it says."""
    assert verdicts(record(wants_json=True), SORRY) == (True, False)


@pytest.mark.parametrize(("text", "valid"), [
    (VALID, True), ("[1, 2]", True), ('{"city": "Os', False), ("", False),
    ("Sure! Here is the JSON: " + VALID, False),
])
def test_json_validity_is_whether_the_answer_parses(text: str, valid: bool) -> None:
    """An answer to a JSON request is valid when its text parses as JSON."""
    made = record(wants_json=True)
    observe_finish(made, answer({"content": text}, finish="stop"))
    assert verdicts(made, text) == (False, valid)


def test_a_tool_call_gets_no_json_verdict() -> None:
    """An answer that calls a tool has no text to judge as JSON."""
    made = record(wants_json=True)
    observe_finish(made, answer({"content": None, "tool_calls": []}, finish="tool_calls"))
    assert verdicts(made, "") == (False, None)


def test_only_requests_for_one_json_answer_want_json() -> None:
    """json_object and json_schema ask for JSON; several choices cannot be judged (their texts
    are joined), and text or no format asks for none."""
    def wants(**fields: Any) -> bool:
        return ChatRequest.model_validate({
            "model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
            ).wants_json()

    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}
    assert wants(response_format={"type": "json_object"}) and wants(response_format=schema)
    assert wants(response_format=schema, n=1)
    assert not wants(response_format=schema, n=2)
    assert not wants(response_format={"type": "text"}) and not wants()
