"""A failed tool result's marker (``app.providers.tool_errors``): made by ``/v1/messages``'
translation from ``is_error: true``, taken off and turned into the flag by the translators whose
format has one."""

from __future__ import annotations

from typing import Any

import pytest

from app.inbound.anthropic import read_request
from app.providers import anthropic_request, bedrock_converse, gemini_request
from app.providers.tool_errors import TOOL_ERROR, marked, unmarked
from app.schemas import Message


@pytest.mark.parametrize(("content", "expected"), [
    (f"{TOOL_ERROR} disk full", ("disk full", True)),
    (f"{TOOL_ERROR}\ndisk full", ("disk full", True)),
    (TOOL_ERROR, ("", True)),
    ("disk full", ("disk full", False)),
    (f"see {TOOL_ERROR}", (f"see {TOOL_ERROR}", False)),
    ([{"type": "text", "text": f"{TOOL_ERROR} a"}, {"type": "text", "text": "b"}],
     ([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], True)),
    ([{"type": "text", "text": TOOL_ERROR}, {"type": "text", "text": "b"}],
     ([{"type": "text", "text": "b"}], True)),
    (None, (None, False)),
])
def test_unmarked(content: Any, expected: tuple[Any, bool]) -> None:
    assert unmarked(content) == expected


def test_marked_round_trip() -> None:
    assert marked("") == TOOL_ERROR
    assert unmarked(marked("x")) == ("x", True)


def messages(content: Any) -> list[Message]:
    return [Message(role="user", content="go"),
            Message.model_validate({"role": "assistant", "content": None, "tool_calls": [{
                "id": "c1", "type": "function",
                "function": {"name": "lookup", "arguments": "{}"}}]}),
            Message(role="tool", tool_call_id="c1", content=content)]


@pytest.mark.parametrize("failed", [True, False])
def test_anthropic_translation_sets_is_error(failed: bool) -> None:
    """Claude translated from chat gets ``is_error: true`` back, its text unmarked."""
    _, turns = anthropic_request.translate_messages(
        messages(marked("disk full") if failed else "disk full"))
    block = turns[-1]["content"][0]
    assert block["type"] == "tool_result" and block["content"] == "disk full"
    assert block.get("is_error") is (True if failed else None)


def test_gemini_translation_puts_a_json_error_under_error() -> None:
    _, contents = gemini_request.translate_messages(
        messages([{"type": "text", "text": marked('{"code": 7}')}]))
    response = contents[-1]["parts"][0]["functionResponse"]["response"]
    assert response == {"error": {"code": 7}}


@pytest.mark.parametrize(("model", "takes"), [
    ("anthropic.claude-3-5-haiku-20241022-v1:0", True),
    ("us.anthropic.claude-sonnet-4-20250514-v1:0", True),
    ("amazon.nova-pro-v1:0", True),
    ("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.amazon.nova-lite-v1:0", True),
    ("meta.llama3-1-8b-instruct-v1:0", False), ("mistral.mistral-large-2402-v1:0", False),
])
def test_bedrock_status_only_where_documented(model: str, takes: bool) -> None:
    assert bedrock_converse.takes_status(model) is takes
    _, turns = bedrock_converse.translate_messages(messages(marked("x")), status=takes)
    result = turns[-1]["content"][0]["toolResult"]
    assert result == ({"toolUseId": "c1", "content": [{"text": "x"}], "status": "error"}
                      if takes else {"toolUseId": "c1", "content": [{"text": marked("x")}]})


def test_inbound_marks_only_is_error_true() -> None:
    """``is_error: true`` marks the tool message's text; false or absent leaves it."""
    def tool_text(flag: Any) -> Any:
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": "t1", "content": "no"}
        if flag is not None:
            result["is_error"] = flag
        body = {"model": "m", "max_tokens": 5, "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f",
                                               "input": {}}]},
            {"role": "user", "content": [result]}]}
        chat = read_request(body).body
        return next(m for m in chat["messages"] if m["role"] == "tool")["content"]

    assert tool_text(True) == marked("no")
    assert tool_text(False) == tool_text(None) == "no"
