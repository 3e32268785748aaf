"""The walk over bodies: which strings and keys are text to scan, and rewriting them."""

from __future__ import annotations

import base64
from typing import Any

from app.privacy.walk import data_url, rewrite, texts

EMAIL = "alice.smith@example.com"
PNG = base64.b64encode(bytes(range(256)) * 4).decode()
SIGNATURE = "EqQBCkgIARAB" + PNG[:88] + "+/=="  # a thinking signature: hundreds of characters


def upper(text: str) -> str:
    return text.upper() if "@" in text else text


def test_text_starting_with_data_colon_is_scanned() -> None:
    """A string that only starts with ``data:`` is text; a base64 data URL is not."""
    body = {"messages": [
        {"role": "user", "content": f"data: {EMAIL}"},
        {"role": "user", "content": [{"type": "text", "text": f"data:{EMAIL}"},
                                     {"type": "image_url",
                                      "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}]}
    found = list(texts(body))
    assert f"data: {EMAIL}" in found and f"data:{EMAIL}" in found
    assert not any(PNG in text for text in found)
    assert rewrite(body, upper)["messages"][0]["content"] == f"data: {EMAIL}".upper()


def test_data_url_shapes() -> None:
    """Only ``data:[type][;params];base64,`` followed by base64 alone is a payload."""
    assert data_url(f"data:image/png;base64,{PNG}")
    assert data_url("data:application/pdf;name=a.pdf;base64,JVBERi0x\r\nLjQ=")
    assert data_url("data:;base64,AAAA")
    assert not data_url(f"data:text/plain;base64, {EMAIL}")  # not base64
    assert not data_url(f"data:text/plain,{EMAIL}")  # not base64 encoded: text
    assert not data_url(f"data: {EMAIL}")


def test_payload_fields_skipped_unless_text() -> None:
    """``data`` and ``signature`` are skipped as base64 payloads; a plain-text document's
    ``data`` and any non-base64 value are scanned."""
    blocks: list[dict[str, Any]] = [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                        "data": f"contact {EMAIL}"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "input_audio", "input_audio": {"data": PNG, "format": "wav"}},
        {"type": "thinking", "thinking": "hm", "signature": SIGNATURE},
        {"type": "document", "source": {"type": "base64", "data": f"oops {EMAIL}"}},
    ]
    found = list(texts({"messages": [{"role": "user", "content": blocks}]}))
    assert found.count(f"contact {EMAIL}") == 1 and f"oops {EMAIL}" in found
    assert PNG not in found and SIGNATURE not in found
    redacted = rewrite(blocks, upper)
    assert redacted[0]["source"]["data"] == f"contact {EMAIL}".upper()
    assert redacted[1] is blocks[1] and redacted[2] is blocks[2]


def test_documents_schemas_and_ids_are_scanned() -> None:
    """Cohere documents, ``response_format`` schemas, ``tool_choice`` and ids are text."""
    body = {
        "documents": [{"id": "d1", "data": {"text": f"contact {EMAIL}"}}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {
            "type": "object", "properties": {"to": {"type": "string",
                                                    "description": f"write {EMAIL}"}}}}},
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "messages": [
            {"role": "assistant", "tool_calls": [
                {"id": f"call_{EMAIL}", "type": "function",
                 "function": {"name": "lookup", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": f"call_{EMAIL}", "content": "ok"}],
    }
    found = list(texts(body))
    assert {f"contact {EMAIL}", f"write {EMAIL}", f"call_{EMAIL}", "lookup"} <= set(found)
    assert "json_schema" not in found and "object" not in found  # type values: not text
    out = rewrite(body, upper)
    assert out["messages"][0]["tool_calls"][0]["id"] == out["messages"][1]["tool_call_id"]
    assert out["documents"][0]["data"]["text"] == f"contact {EMAIL}".upper()


def test_client_keys_are_scanned_and_rewritten_in_order() -> None:
    """A key that is not a field name (a metadata key, a property name) is text; a rewritten
    key keeps its place; field names are not scanned."""
    body: dict[str, Any] = {"metadata": {"a": "1", EMAIL: "x", "z": "2"}, "user": "u"}
    found = list(texts(body))
    assert EMAIL in found and "metadata" not in found and "user" not in found
    out = rewrite(body, upper)
    assert list(out["metadata"].items()) == [("a", "1"), (EMAIL.upper(), "x"), ("z", "2")]
    assert body["metadata"][EMAIL] == "x"  # the original is untouched


def test_unchanged_is_shared() -> None:
    """Rewriting without a change returns the same objects."""
    body = {"messages": [{"role": "user", "content": "hi"}], "metadata": {"k": "v"}}
    assert rewrite(body, upper) is body


def test_fixed_value_fields_are_skipped_only_when_they_look_like_one() -> None:
    """``role``, ``type``, ``media_type``... are skipped when they hold one of their few values;
    a client's own ``metadata`` entry named ``type`` holding a phone number or an email is
    scanned and rewritten; ``model`` is never scanned (the gateway replaces it)."""
    body = {"model": "gpt-4o-2024-08-06",
            "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": PNG}}]}],
            "metadata": {"type": "call +1 650 253 0000", "role": EMAIL}}
    found = list(texts(body))
    assert found == ["call +1 650 253 0000", EMAIL]
    rewritten = rewrite(body, upper)
    assert rewritten["metadata"] == {"type": "call +1 650 253 0000", "role": EMAIL.upper()}
    assert rewritten["messages"] is body["messages"] and rewritten["model"] == body["model"]


def test_nothing_in_the_clients_own_data_is_skipped() -> None:
    """Under ``metadata`` (or a key of the client's own) every string is scanned, whatever key
    it sits under: ``model``, ``data``, ``signature``, ``type`` with one word; and ``model`` is
    skipped only as the body's own, not inside a message."""
    body = {"model": "chat",
            "messages": [{"role": "user", "content": "hi", "model": EMAIL}],
            "metadata": {"model": EMAIL, "data": "4111111111111111",
                         "signature": "DE89370400440532013000", "type": "bluebird"},
            "extra": {"role": "PRJ-ABCDE"}}
    found = list(texts(body))
    assert found == ["hi", EMAIL, EMAIL, "4111111111111111", "DE89370400440532013000",
                     "bluebird", "extra", "PRJ-ABCDE"]
    assert "chat" not in found
    rewritten = rewrite(body, upper)
    assert rewritten["metadata"]["model"] == EMAIL.upper()
    assert rewritten["messages"][0]["model"] == EMAIL.upper()


def test_a_short_data_value_is_text_even_where_payloads_go() -> None:
    """``data`` and ``signature`` are skipped as base64 payloads only from 64 characters: a
    card number or an IBAN in a block's ``data`` is scanned."""
    block = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "4111111111111111"}}
    assert list(texts(block)) == ["4111111111111111"]
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PNG}}
    assert list(texts(image)) == []


def test_pairs_are_the_clients_own_keys_with_string_values() -> None:
    """``pairs`` gets each key of the client's own (and any key inside its data) whose value
    is a string, with the value: the wire format's own fields are not among them."""
    body = {"model": "chat", "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi", "name": "bob"}],
            "metadata": {"password": "p1", "max_tokens": "p2", "n": 3},
            "creds": {"api_key": "p3", "nested": {"token": "p4"}}, "mine": "p5",
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {
                "type": "object", "properties": {"pw": {"type": "string"}}}}}]}
    pairs: list[tuple[str, str]] = []
    assert list(texts(body, pairs=pairs)) == list(texts(body))
    assert pairs == [("password", "p1"), ("max_tokens", "p2"), ("api_key", "p3"),
                     ("token", "p4"), ("mine", "p5"), ("type", "string")]


def test_signed_thinking_blocks_are_skipped_unless_asked() -> None:
    """Anthropic's signed thinking (chat's thinking_blocks, native thinking and
    redacted_thinking blocks) is neither scanned nor rewritten; ``blocks=True`` (a call
    record's scrub) walks it; in the client's own data nothing is skipped."""
    signed: list[dict[str, Any]] = [
        {"type": "thinking", "thinking": f"to {EMAIL}", "signature": "s"},
        {"type": "redacted_thinking", "data": f"x {EMAIL}"}]
    body = {"messages": [
        {"role": "assistant", "content": "ok", "thinking_blocks": signed},
        {"role": "assistant", "content": signed}],
        "metadata": {"note": signed[0]}}
    assert list(texts(body)).count(f"to {EMAIL}") == 1  # the metadata's copy only
    redacted = rewrite(body, upper)
    assert redacted["messages"] == body["messages"]
    assert redacted["metadata"]["note"]["thinking"] == f"to {EMAIL}".upper()
    assert list(texts(body, blocks=True)).count(f"to {EMAIL}") == 3
    scrubbed = rewrite(body, upper, blocks=True)
    assert scrubbed["messages"][0]["thinking_blocks"][1]["data"] == f"x {EMAIL}".upper()
    assert scrubbed["messages"][1]["content"][0]["thinking"] == f"to {EMAIL}".upper()
