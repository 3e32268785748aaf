"""Values the scanner used not to see: integers of the client's own data (a card or phone
number sent as a JSON number), and tool-call arguments and tool results written as JSON with
escapes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.privacy.detect import Detector
from app.privacy.placeholders import Vault
from app.privacy.scan import scan_request
from app.privacy.walk import rewrite

DETECTOR = Detector(phone_regions=("US", "GB"))


def redacted(body: dict[str, Any]) -> tuple[dict[str, int], Any]:
    """What the scan counts in ``body``, and ``body`` redacted as the privacy stage does."""
    found, counts, reserved, _ = scan_request(DETECTOR, body, None)
    vault = Vault(reserved)
    return counts, rewrite(body, lambda t: t if t not in found else vault.redact(t, found[t]))


def test_integers_of_the_clients_own_data_are_scanned() -> None:
    body = {"model": "m", "seed": 4111111111111111, "max_tokens": 4155552671,
            "messages": [{"role": "user", "content": "hi"}],
            "extra": {"card": 4111111111111111, "phone": 14155552671, "count": 12,
                      "ratio": 4111111111111111.0, "ok": True, "order_id": 4155552671},
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {
                "type": "object", "properties": {"c": {"type": "integer",
                                                       "default": 5500000000000004}}}}}]}
    counts, out = redacted(body)
    assert counts == {"CREDIT_CARD": 2, "PHONE": 1}
    assert out["extra"] == {"card": "<CREDIT_CARD_1>", "phone": "<PHONE_1>", "count": 12,
                            "ratio": 4111111111111111.0, "ok": True, "order_id": 4155552671}
    assert out["tools"][0]["function"]["parameters"]["properties"]["c"]["default"] \
        == "<CREDIT_CARD_2>"
    # The wire format's own numbers are parameters, not data.
    assert out["seed"] == 4111111111111111 and out["max_tokens"] == 4155552671


def test_a_bare_number_is_a_phone_only_under_a_phone_key() -> None:
    assert redacted({"metadata": {"mobile": "4155552671"}})[0] == {"PHONE": 1}
    assert redacted({"metadata": {"id": "4155552671"}})[0] == {}
    assert redacted({"x": {"tel": 4155552671}})[0] == {"PHONE": 1}


@pytest.mark.parametrize("value", ["jörg.müller@bücher.de", "zoë.ng@example.com"])
def test_escaped_json_arguments_and_results_are_scanned_decoded(value: str) -> None:
    args = json.dumps({"to": value, "note": "line\nbreak"})
    result = json.dumps({"sent_to": value})
    assert "\\u" in args
    body = {"messages": [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "send", "arguments": args}}]},
        {"role": "tool", "tool_call_id": "c1", "content": result},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                      "content": result}]}]}
    counts, out = redacted(body)
    assert counts == {"EMAIL": 3}
    sent = out["messages"][0]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(sent) == {"to": "<EMAIL_1>", "note": "line\nbreak"}  # still JSON
    assert json.loads(out["messages"][1]["content"]) == {"sent_to": "<EMAIL_1>"}
    assert json.loads(out["messages"][2]["content"][0]["content"]) == {"sent_to": "<EMAIL_1>"}


def test_unescaped_json_and_clean_escaped_json_are_left_as_written() -> None:
    args = '{"q":  "caf\\u00e9",\n "n": 1}'
    body = {"messages": [{"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": args}}]}]}
    counts, out = redacted(body)
    assert counts == {} and out is body
