"""Tool calls' arguments and tool results written as JSON with escapes, in the shapes that
used to escape the scan: a result given as a list of text parts, a failed result's
``[tool error]`` marker before the JSON, leading whitespace, a top-level JSON string, JSON
nested past the walk's depth (or past Python's own recursion limit), and text that is not JSON
at all but hides a value behind a ``\\u`` escape. Each is found, and under ``redact`` sent
with the placeholder (JSON still JSON where it was)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.privacy.detect import Detector
from app.privacy.placeholders import Vault
from app.privacy.scan import scan_request
from app.privacy.walk import rewrite

DETECTOR = Detector(phone_regions=("US", "GB"))
EMAIL = "jane.doe@example.com"
ESCAPED = json.dumps({"r": EMAIL}).replace("@", "\\u0040")  # {"r": "jane.doe\u0040example.com"}


def redacted(body: dict[str, Any]) -> tuple[dict[str, int], Any]:
    """What the scan counts in ``body``, and ``body`` redacted as the privacy stage does."""
    found, counts, reserved, _ = scan_request(DETECTOR, body, None)
    vault = Vault(reserved)
    return counts, rewrite(body, lambda t: t if t not in found else vault.redact(t, found[t]))


def chat(result: Any, arguments: str = "{}") -> dict[str, Any]:
    return {"messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": "c1", "content": result}]}


def native(result: Any) -> dict[str, Any]:
    return {"messages": [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f",
                                           "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                      "content": result}]}]}


def test_text_parts_of_a_tool_result_are_decoded() -> None:
    parts = [{"type": "text", "text": ESCAPED}, {"type": "text", "text": "and " + ESCAPED}]
    counts, out = redacted(chat(parts))
    assert counts == {"EMAIL": 2}
    sent = out["messages"][2]["content"]
    assert json.loads(sent[0]["text"]) == {"r": "<EMAIL_1>"}
    assert sent[1]["text"] == 'and {"r": "<EMAIL_1>"}'  # not JSON: its escape decoded
    counts, out = redacted(native([{"type": "text", "text": ESCAPED}]))
    assert counts == {"EMAIL": 1}
    assert json.loads(out["messages"][1]["content"][0]["content"][0]["text"]) \
        == {"r": "<EMAIL_1>"}
    # A user's own text part is not a tool result: read as written (nothing found in it).
    assert redacted({"messages": [{"role": "user", "content": [
        {"type": "text", "text": ESCAPED}]}]})[0] == {}


@pytest.mark.parametrize("result", [
    "[tool error] " + ESCAPED, "[tool error]\n" + ESCAPED, "  \n" + ESCAPED + "\n",
    json.dumps(EMAIL).replace("@", "\\u0040"),
])
def test_marker_whitespace_and_json_strings_are_decoded(result: str) -> None:
    for body in (chat(result), native(result)):
        counts, out = redacted(body)
        assert counts == {"EMAIL": 1}
        sent = json.dumps(out)
        assert "u0040" not in sent and "<EMAIL_1>" in sent
    out = redacted(chat(result))[1]["messages"][2]["content"]
    head = result[:len(result) - len(result.lstrip("[toler] \n"))]
    assert out.startswith(head)  # the marker and whitespace kept as they were
    assert "<EMAIL_1>" in json.dumps(json.loads(out[len(head):]))  # still JSON


def test_arguments_with_leading_whitespace_are_decoded() -> None:
    counts, out = redacted(chat("ok", arguments=" " + ESCAPED))
    assert counts == {"EMAIL": 1}
    sent = out["messages"][1]["tool_calls"][0]["function"]["arguments"]
    assert sent[0] == " " and json.loads(sent) == {"r": "<EMAIL_1>"}


@pytest.mark.parametrize("depth", [255, 256, 300, 1200, 5000])
def test_json_nested_past_the_walks_depth_is_scanned_as_written(depth: int) -> None:
    """Past the walk's depth (and past Python's recursion limit, where decoding fails): the
    text as written, its ``\\u`` escapes decoded, is scanned; redacted, it stays JSON."""
    deep = "[" * depth + json.dumps(EMAIL).replace("@", "\\u0040") + "]" * depth
    for body, where in ((chat("ok", arguments=deep), (1, "tool_calls")), (chat(deep), (2,)),
                        (native(deep), (1,))):
        counts, out = redacted(body)
        assert counts == {"EMAIL": 1}
        message = out["messages"][where[0]]
        sent = message["tool_calls"][0]["function"]["arguments"] if len(where) > 1 \
            else message["content"] if isinstance(message["content"], str) \
            else message["content"][0]["content"]
        assert "u0040" not in sent and sent.count("<EMAIL_1>") == 1
        assert sent == deep.replace("jane.doe\\u0040example.com", "<EMAIL_1>")


def test_escapes_that_would_break_the_text_are_kept() -> None:
    """Not JSON, with a ``\\u`` escape: scanned with its escapes decoded; an escaped backslash,
    a quote, a control character and a lone surrogate stay escaped."""
    text = 'r: jane.doe\\u0040example.com \\\\u0040 \\u0022 \\u000a \\ud800 \\ud83d\\ude00 \\/'
    counts, out = redacted(chat(text))
    assert counts == {"EMAIL": 1}
    assert out["messages"][2]["content"] \
        == 'r: <EMAIL_1> \\\\u0040 \\u0022 \\u000a \\ud800 \U0001f600 /'
    clean = chat('nothing \\u0041 here')
    assert redacted(clean) == ({}, clean)
