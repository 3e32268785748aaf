# ruff: noqa: F811  (pytest passes the imported fixtures by parameter name)
"""A value found once is replaced wherever else it appears in the request (its detector found
it only in context: a secret after ``password=``, a bare phone number after "call", a bare
SSN after "SSN"), and nowhere inside a longer word; the client's own data in the wire
format's fields (a tool call's ``input``, a schema's instance values, Cohere's documents) is
scanned whole; a ``/v1/messages`` structured-output answer gets its values back JSON-escaped."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from app.inbound.anthropic import structured_output
from app.privacy import placeholders
from app.privacy.detect import Detector, Finding
from app.privacy.placeholders import Known, StreamRestorer, Vault
from app.privacy.scan import scan_request
from app.privacy.stream import restore_chunk, restore_message
from app.privacy.walk import texts
from app.providers.base import NATIVE_EVENTS
from tests.api.conftest import (  # noqa: F401  (run_gateway: the fixture, used by name)
    MASTER_KEY,
    GatewayFactory,
    RunningGateway,
    run_gateway,
)
from tests.privacy.test_gateway import Upstream, config, upstream  # noqa: F401

SECRET = "Xk9mP2vL8qR4tZ7w"
PHONE = "4155552671"
SSN = "123456789"
AWS = "AKIAIOSFODNN7EXAMPLE"
PEM = ("-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4\n"
       "-----END RSA PRIVATE KEY-----")
DETECTOR = Detector()


@pytest.fixture
def gw(run_gateway: GatewayFactory, simulator: str) -> Iterator[RunningGateway]:
    with run_gateway(config(simulator)) as running:
        yield running


def test_known_values_are_found_bounded() -> None:
    """A known value is found where it stands alone, at a text's ends and beside
    punctuation, never inside a longer run of word characters (``1234567`` is not in
    ``91234567`` nor ``1234567_``); an edge that is not a word character needs no boundary."""
    known = Known([("id 1234567", [Finding("PHONE", 3, 10)]),
                   ("x (415) 555-2671", [Finding("PHONE", 2, 16)])])
    text = "1234567 91234567 12345678 a1234567 1234567_ (1234567). x(415) 555-2671"
    found = sorted(known.occurrences(text))
    assert [text[f.start:f.end] for f in found] == ["1234567", "1234567", "(415) 555-2671"]
    assert [f.start for f in found] == [0, 45, 56]
    spread = known.across(["no", "call 1234567", "z1234567", "1234567"])
    assert spread == {1: [Finding("PHONE", 5, 12)], 3: [Finding("PHONE", 0, 7)]}


def test_known_value_never_spans_two_texts() -> None:
    """Texts searched together are searched as if apart: a value is not found across the
    end of one text and the start of the next."""
    known = Known([("a\x00b", [Finding("CUSTOM", 0, 3)])])
    assert known.across(["a", "b", "a\x00b"]) == {2: [Finding("CUSTOM", 0, 3)]}


def test_known_values_found_at_once_overlapping_and_many() -> None:
    """All values are looked for in one pass: a value inside another is found with it (the
    merge resolves the overlap), and thousands of values, each also copied into another text,
    are each found there (one pass whatever their number: a pass a value was quadratic)."""
    known = Known([("call 4155552671 or +1 4155552671",
                    [Finding("PHONE", 5, 15), Finding("PHONE", 19, 32)])])
    assert sorted(known.occurrences("+1 4155552671")) == \
        [Finding("PHONE", 0, 13), Finding("PHONE", 3, 13)]
    values = [f"user{i:05d}@example.com" for i in range(5000)]
    found, at = [], 0
    for value in values:
        found.append(Finding("EMAIL", at, at + len(value)))
        at += len(value) + 1
    many = Known([(" ".join(values), found)])
    copies = " / ".join(reversed(values))
    spread = many.across(["nothing here", copies])
    assert list(spread) == [1]
    assert sorted(copies[f.start:f.end] for f in spread[1]) == values


def test_known_values_nested_in_one_another_fall_back_to_the_longest() -> None:
    """Values nested in one another (every substring of a token, each found once) make the
    automaton's hits grow with the square of their length wherever the token repeats; past the
    hit budget the search keeps the leftmost longest occurrence at each place, so every copy of
    the token is still found whole, once."""
    token = "Qx7mP2vL8qR4tZ7wKd9sN3bF6hJ1cY5a"
    nested = [token[i:j] for i in range(len(token)) for j in range(i + 3, len(token) + 1)]
    found, at = [], 0
    for value in nested:
        found.append(Finding("SECRET", at, at + len(value)))
        at += len(value) + 1
    known = Known([(" ".join(nested), found)])
    copies = " ".join([token] * 400)
    hits = sum(len(token) - size + 1 for size in range(3, len(token) + 1)) * 400
    assert hits > len(copies) // placeholders.HITS_PER_CHARACTER + placeholders.SPARE_HITS
    assert known.occurrences(copies) == [
        Finding("SECRET", n * (len(token) + 1), n * (len(token) + 1) + len(token))
        for n in range(400)]


def test_scan_replaces_a_value_found_in_context_everywhere() -> None:
    """A value found only after its context word is found wherever else it is, in the same
    text and in other messages (counted each time), but not inside a longer word."""
    said = [f"my password={SECRET} - type {SECRET} into the box",
            f"ok: {SECRET}, {PHONE} and {SSN} noted",
            f"call me on {PHONE}; SSN {SSN}; not x{SECRET} nor 9{SSN}"]
    body = {"model": "m", "messages": [{"role": "user", "content": text} for text in said]}
    found, counts, _, _ = scan_request(DETECTOR, body, None)
    vault = Vault()
    redacted = [vault.redact(text, found[text]) for text in said]
    assert redacted == [
        "my password=<SECRET_1> - type <SECRET_1> into the box",
        "ok: <SECRET_1>, <PHONE_1> and <US_SSN_1> noted",
        f"call me on <PHONE_1>; SSN <US_SSN_1>; not x{SECRET} nor 9{SSN}",
    ]
    assert counts == {"SECRET": 3, "PHONE": 2, "US_SSN": 2}


def test_scan_spreads_into_the_native_body() -> None:
    """A value found in the chat body is found in a text only the native body holds (a
    document's title), and one found only there is found in the chat body."""
    body = {"model": "m", "messages": [{"role": "user", "content": f"token: {SECRET}"},
                                       {"role": "user", "content": f"see {PHONE}"}]}
    native = {"model": "m", "messages": [
        {"role": "user", "content": f"token: {SECRET}"},
        {"role": "user", "content": [{"type": "document", "title": f"{SECRET}?", "source": {
            "type": "text", "media_type": "text/plain", "data": "notes"}}]},
        {"role": "user", "content": f"see {PHONE} (phone {PHONE})"}]}
    found, counts, _, _ = scan_request(DETECTOR, body, native)
    assert found[f"{SECRET}?"] == [Finding("SECRET", 0, len(SECRET))]
    assert found[f"see {PHONE}"] == [Finding("PHONE", 4, 14)]
    assert counts == {"SECRET": 2, "PHONE": 3}


def test_scan_without_findings_finds_nothing() -> None:
    """A request with nothing found has no findings and no known values."""
    found, counts, _, known = scan_request(DETECTOR, {"messages": [{"content": "hello"}]}, None)
    assert (found, counts, bool(known)) == ({}, {}, False)


def test_client_data_in_wire_fields_is_scanned_whole() -> None:
    """Values under keys named like wire fields (``type``, ``role``, ``index``) are text in a
    tool call's ``input`` and ``arguments``, a schema's ``default``/``const``/``enum``/
    ``examples`` and Cohere's ``documents``; the wire format's own ``type`` is still skipped."""
    owned = {"type": AWS, "role": AWS, "index": "ABC", "model": "m1"}
    body = {"model": "m", "messages": [
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "t", "name": "save", "input": owned}]},
        {"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": owned}}]}],
        "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {"a": {
            "type": "object", "default": owned, "const": owned, "enum": [owned],
            "examples": [owned]}}}}],
        "documents": [{"id": "d", "data": owned}]}
    found = list(texts(body))
    assert found.count(AWS) == 2 * 7 and found.count("ABC") == 7 and found.count("m1") == 7
    assert "tool_use" not in found and "function" not in found and "assistant" not in found


def test_restore_message_escapes_structured_output_text() -> None:
    """A native answer under structured output: its text blocks' values go back JSON-escaped
    (the text parses), a tool_use input's as they are; without it, plain text."""
    vault = Vault()
    vault.redact(PEM, [Finding("SECRET", 0, len(PEM))])
    message = {"content": [{"type": "text", "text": '{"key": "<SECRET_1>"}'},
                           {"type": "tool_use", "id": "t", "name": "f",
                            "input": {"key": "<SECRET_1>"}}]}
    out = restore_message(vault, message, json_content=True)
    assert json.loads(out["content"][0]["text"]) == {"key": PEM}
    assert out["content"][1]["input"] == {"key": PEM}
    plain = restore_message(vault, message)
    assert plain["content"][0]["text"] == '{"key": "' + PEM + '"}'


def test_native_text_deltas_escaped_under_structured_output() -> None:
    """A native stream's ``text_delta``s under structured output concatenate to JSON holding
    the value, the placeholder split across deltas."""
    vault = Vault()
    vault.redact(PEM, [Finding("SECRET", 0, len(PEM))])
    restorer = StreamRestorer(vault)
    document = '{"key": "<SECRET_1>"}'
    text = ""
    for i in range(0, len(document), 4):
        event = ("content_block_delta", orjson.dumps({
            "type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": document[i:i + 4]}}).decode())
        chunk = restore_chunk(restorer, {"choices": [], NATIVE_EVENTS: [event]},
                              json_content=True)
        text += "".join(orjson.loads(d)["delta"]["text"] for _, d in chunk[NATIVE_EVENTS])
    assert json.loads(text) == {"key": PEM}


@pytest.mark.parametrize(("value", "message", "sent"), [
    (SECRET, f"my password={SECRET} - type {SECRET} into the box",
     "my password=<SECRET_1> - type <SECRET_1> into the box"),
    (PHONE, f"call me on {PHONE}. My id is {PHONE} too",
     "call me on <PHONE_1>. My id is <PHONE_1> too"),
    (SSN, f"SSN {SSN}; write {SSN} on the form", "SSN <US_SSN_1>; write <US_SSN_1> on the form"),
])
def test_redact_sends_no_copy_of_a_found_value(gw: RunningGateway, upstream: Upstream,
                                               value: str, message: str, sent: str) -> None:
    """Redact, end to end: the third party gets the placeholder for every copy of a value
    found once, in the same message and in a later turn; the client gets the value back; the
    stored bodies (the answer repeating it too) hold none."""
    answer = gw.client().chat.completions.create(
        model="redacted", extra_headers={"x-request-id": upstream.marker}, messages=[
            {"role": "user", "content": f"{message} {upstream.marker}"},
            {"role": "assistant", "content": "noted"},
            {"role": "user", "content": f"fill box 3 with {value}"}])
    placeholder = sent[sent.index("<"):sent.index(">") + 1]
    body = upstream.received()[0]["body"]
    assert [m["content"] for m in body["messages"]] == [
        f"{sent} {upstream.marker}", "noted", f"fill box 3 with {placeholder}"]
    assert value not in json.dumps(body)
    text = answer.choices[0].message.content or ""
    assert text.startswith(f"Simulated reply to: fill box 3 with {value}")
    record = gw.sink.by_id(upstream.marker)
    assert record.privacy_entities == {placeholder[1:-3]: 3}
    for stored in (record.request_body, record.response_body):
        assert stored is not None and value not in json.dumps(stored)


def messages_call(gw: RunningGateway, body: dict[str, Any], *, stream: bool = False) -> str:
    """The text of a ``/v1/messages`` answer (its first block's, or its text deltas')."""
    headers = {"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01"}
    if not stream:
        reply = httpx.post(gw.url + "/v1/messages", json=body, headers=headers, timeout=30)
        assert reply.status_code == 200, reply.text
        text: str = reply.json()["content"][0]["text"]
        return text
    out = ""
    with httpx.stream("POST", gw.url + "/v1/messages", json={**body, "stream": True},
                      headers=headers, timeout=30) as reply:
        for line in reply.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                if event.get("type") == "content_block_delta":
                    out += event["delta"].get("text", "")
    return out


@pytest.mark.parametrize("stream", [False, True])
def test_messages_structured_output_restored_as_json(gw: RunningGateway, upstream: Upstream,
                                                     stream: bool) -> None:
    """``/v1/messages`` with ``output_config.format`` to a native target under redact: the
    answer's JSON, unary or streamed, parses and holds the value (a PEM key: newlines)."""
    schema = {"type": "object", "properties": {"key": {"type": "string", "enum": [PEM]}},
              "required": ["key"], "additionalProperties": False}
    text = messages_call(gw, {
        "model": "claude", "max_tokens": 300,
        "messages": [{"role": "user", "content": f"the key as JSON {upstream.marker}"}],
        "output_config": {"format": {"type": "json_schema", "schema": schema}}}, stream=stream)
    assert json.loads(text) == {"key": PEM}
    assert PEM not in json.dumps(upstream.received()[0]["body"])


def test_messages_tool_use_input_scanned_whole(gw: RunningGateway, upstream: Upstream) -> None:
    """``/v1/messages``: a tool_use block's input is the client's data, redacted under keys
    named like wire fields too."""
    messages_call(gw, {
        "model": "claude", "max_tokens": 20,
        "tools": [{"name": "save", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": f"save it {upstream.marker}"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1",
                                               "name": "save", "input": {
                                                   "type": AWS, "role": AWS, "note": AWS}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                          "content": "saved"}]}]})
    body = upstream.received()[0]["body"]
    assert body["messages"][1]["content"][0]["input"] == {
        "type": "<SECRET_1>", "role": "<SECRET_1>", "note": "<SECRET_1>"}


def test_block_counts_every_copy(gw: RunningGateway, upstream: Upstream) -> None:
    """Block names every copy of a value found once in its counts."""
    with pytest.raises(openai.BadRequestError, match="SECRET \\(2\\)"):
        gw.client().chat.completions.create(model="blocked", messages=[
            {"role": "user", "content": f"my password={SECRET} {upstream.marker}"},
            {"role": "user", "content": f"type {SECRET}"}])


def test_stored_bodies_hold_no_copy_of_a_found_value(gw: RunningGateway,
                                                     upstream: Upstream) -> None:
    """Under private_only (sent as it is; the private target's answer repeats the value
    without its context word), the stored request and answer hold the placeholder for every
    copy."""
    answer = gw.client().chat.completions.create(
        model="private", extra_headers={"x-request-id": upstream.marker}, messages=[
            {"role": "user", "content": f"my password={SECRET} {upstream.marker}"},
            {"role": "user", "content": f"type {SECRET}"}])
    assert (answer.choices[0].message.content or "").startswith(
        f"Simulated reply to: type {SECRET}")
    record = gw.sink.by_id(upstream.marker)
    assert record.privacy_entities == {"SECRET": 2}
    for stored in (record.request_body, record.response_body):
        assert stored is not None and SECRET not in json.dumps(stored)
        assert "type <SECRET_1>" in json.dumps(stored)


def test_structured_output_is_recognised() -> None:
    """A native body asks for structured output with ``output_config.format`` or the beta's
    top-level ``output_format``; a body without either, or with a text format, does not."""
    schema = {"type": "json_schema", "schema": {"type": "object"}}
    assert structured_output({"output_config": {"format": schema}})
    assert structured_output({"output_format": schema})
    assert not structured_output({"output_config": {"effort": "low"}})
    assert not structured_output({"output_config": {"format": {"type": "text"}}})
    assert not structured_output(None)
