"""Restoring into JSON text (tool calls' arguments, native ``partial_json``, JSON-mode content):
values go back JSON-escaped, so the document parses and holds them; logprobs tokens, refusals
and native deltas restored as content is."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from app.privacy.detect import Finding
from app.privacy.placeholders import StreamRestorer, Vault
from app.privacy.stream import release, restore_answer, restore_chunk
from app.providers.base import NATIVE_EVENTS

PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\n-----END PRIVATE KEY-----"
VALUES = [PEM, 'say "hi"', "C:\\temp\\new", "tab\there", "日本 é \u2028 😀", "\x00\x1f"]


def vault_of(*values: str) -> Vault:
    """A vault that issued ``<SECRET_1>``... for ``values`` in order."""
    vault = Vault()
    for value in values:
        vault.redact(value, [Finding("SECRET", 0, len(value))])
    return vault


def pieces(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


@pytest.mark.parametrize("value", VALUES)
def test_restore_json_escapes_the_value(value: str) -> None:
    """A placeholder inside a JSON string comes back as the value escaped: the document
    parses and its string equals the value; plain restore is unchanged."""
    vault = vault_of(value)
    document = '{"key": "<SECRET_1>", "note": "x <SECRET_1> y"}'
    assert json.loads(vault.restore_json(document)) == {"key": value,
                                                       "note": f"x {value} y"}
    assert vault.restore("<SECRET_1>") == value


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7])
def test_stream_restores_json_split_anywhere(size: int) -> None:
    """Streamed JSON text, the placeholders split at any point, concatenates to a document
    that parses, holding every value."""
    vault = vault_of(*VALUES)
    document = json.dumps({f"k{i}": f"<SECRET_{i + 1}>" for i in range(len(VALUES))})
    restorer = StreamRestorer(vault)
    out = "".join(restorer.feed(0, p, json_text=True) for p in pieces(document, size))
    assert json.loads(out + restorer.flush(0)) == {f"k{i}": v for i, v in enumerate(VALUES)}


def test_restore_chunk_tool_arguments_and_json_content() -> None:
    """In chunks: tool calls' arguments are JSON text always, content only in JSON mode."""
    vault = vault_of(PEM)
    args = '{"key": "<SECRET_1>"}'
    parts = pieces(args, 4)
    for json_content in (True, False):
        restorer = StreamRestorer(vault)
        got_args, got_content = "", ""
        for i, part in enumerate(parts):
            delta = {"content": part,
                     "tool_calls": [{"index": 0, "function": {"arguments": part}}]}
            choice = {"index": 0, "delta": delta,
                      "finish_reason": "stop" if i == len(parts) - 1 else None}
            out = restore_chunk(restorer, {"choices": [choice]}, json_content=json_content)
            restored = out["choices"][0]["delta"]
            got_content += restored["content"]
            got_args += "".join(c["function"]["arguments"] for c in restored["tool_calls"])
        assert json.loads(got_args) == {"key": PEM}
        if json_content:
            assert json.loads(got_content) == {"key": PEM}
        else:  # plain text: the value as it is
            assert got_content == '{"key": "' + PEM + '"}'


def test_restore_answer_unary() -> None:
    """A unary answer: tool calls' and a function call's arguments escaped, content escaped
    in JSON mode only, refusal restored as text."""
    vault = vault_of(PEM)
    body: dict[str, Any] = {"choices": [{"index": 0, "message": {
        "content": '{"k": "<SECRET_1>"}', "refusal": "no <SECRET_1>",
        "tool_calls": [{"id": "c", "type": "function",
                        "function": {"name": "f", "arguments": '{"k": "<SECRET_1>"}'}}],
        "function_call": {"name": "f", "arguments": '{"k": "<SECRET_1>"}'}}}]}
    for json_content in (True, False):
        message = restore_answer(vault, body, json_content=json_content)["choices"][0]["message"]
        assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"k": PEM}
        assert json.loads(message["function_call"]["arguments"]) == {"k": PEM}
        assert message["refusal"] == f"no {PEM}"
        if json_content:
            assert json.loads(message["content"]) == {"k": PEM}
        else:
            assert message["content"] == '{"k": "' + PEM + '"}'
    assert body["choices"][0]["message"]["content"] == '{"k": "<SECRET_1>"}'  # not changed


def native(kind: str, field: str, text: str, index: int = 0) -> tuple[str, str]:
    return ("content_block_delta", orjson.dumps({
        "type": "content_block_delta", "index": index,
        "delta": {"type": kind, field: text}}).decode())


def test_native_partial_json_escaped_and_no_empty_deltas() -> None:
    """A native stream's ``partial_json`` concatenates to JSON holding the value; a delta
    whose text is all held back is dropped (never an empty ``text_delta``); block start and
    stop events are kept, in order."""
    vault = vault_of(PEM)
    restorer = StreamRestorer(vault)
    start = ("content_block_start", '{"type":"content_block_start","index":0}')
    stop = ("content_block_stop", '{"type":"content_block_stop","index":0}')
    events: list[tuple[str, str]] = []
    document = '{"key": "<SECRET_1>"}'
    for i, part in enumerate(pieces(document, 3)):
        carried = [native("input_json_delta", "partial_json", part)]
        if i == 0:
            carried.insert(0, start)
        events += restore_chunk(restorer, {"choices": [], NATIVE_EVENTS: carried})[NATIVE_EVENTS]
    events += restore_chunk(restorer, {"choices": [], NATIVE_EVENTS: [stop]})[NATIVE_EVENTS]
    assert events[0] == start and events[-1] == stop
    deltas = [orjson.loads(d)["delta"]["partial_json"] for n, d in events[1:-1]]
    assert all(deltas) and json.loads("".join(deltas)) == {"key": PEM}

    text = StreamRestorer(vault)
    out = restore_chunk(text, {"choices": [], NATIVE_EVENTS: [
        start, native("text_delta", "text", "<SEC"), native("text_delta", "text", "RET")]})
    assert out[NATIVE_EVENTS] == [start]
    out = restore_chunk(text, {"choices": [], NATIVE_EVENTS: [
        native("text_delta", "text", "_1> ok"), native("text_delta", "text", ""), stop]})
    assert [orjson.loads(d).get("delta") for _, d in out[NATIVE_EVENTS][:-1]] == [
        {"type": "text_delta", "text": f"{PEM} ok"},
        {"type": "text_delta", "text": ""}]  # the upstream's own empty delta relayed as it is
    assert out[NATIVE_EVENTS][-1] == stop


def entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()),
            "top_logprobs": [{"token": token, "logprob": logprob,
                              "bytes": list(token.encode())}]}


def test_stream_refusal_and_logprobs_restored() -> None:
    """A streamed ``delta.refusal`` is restored like content; logprobs entries whose tokens
    spell a placeholder go out as one entry: the value, their summed logprob."""
    vault = vault_of("ann@x.org")
    restorer = StreamRestorer(vault)
    tokens = [("Hi ", -0.5), ("<SEC", -1.0), ("RET_", -0.25), ("1> ok", -0.25), (" <", -2.0)]
    out: list[dict[str, Any]] = []
    refusal = ""
    for i, (token, logprob) in enumerate([*tokens, ("", 0.0)]):
        ending = i == len(tokens)
        choice: dict[str, Any] = {
            "index": 0, "finish_reason": "stop" if ending else None,
            "delta": {} if ending else {"refusal": token},
            "logprobs": None if ending else {"content": [entry(token, logprob)],
                                             "refusal": None}}
        restored = restore_chunk(restorer, {"choices": [choice]})["choices"][0]
        refusal += restored["delta"].get("refusal") or ""
        if restored["logprobs"] is not None:
            out += restored["logprobs"]["content"]
    assert refusal == "Hi ann@x.org ok <"
    assert [(e["token"], e["logprob"]) for e in out] == [
        ("Hi ", -0.5), ("ann@x.org ok", -1.5), (" <", -2.0)]
    assert out[1]["bytes"] == list(b"ann@x.org ok")
    assert restorer.held() == 0 and restorer.entries == {}


def test_release_sends_held_logprobs() -> None:
    """A stream that ends without a finish_reason releases the held logprobs entries with
    the held content."""
    vault = vault_of("ann@x.org")
    restorer = StreamRestorer(vault)
    restore_chunk(restorer, {"choices": [{"index": 0, "finish_reason": None,
                                          "delta": {"content": "a <SEC"},
                                          "logprobs": {"content": [entry("a <SEC", -1.0)]}}]})
    out = release(restorer, {"id": "x"})
    assert out is not None
    assert out["choices"][0]["delta"] == {"content": "<SEC"}
    assert out["choices"][0]["logprobs"] == {"content": [entry("a <SEC", -1.0)]}


def test_restore_answer_logprobs() -> None:
    """A unary answer's logprobs entries spelling a placeholder are merged into one."""
    vault = vault_of("ann@x.org")
    body = {"choices": [{"index": 0, "message": {"content": "to <SECRET_1>"},
                         "logprobs": {"content": [entry("to <", -1.0), entry("SECRET", -1.0),
                                                  entry("_1>", -1.0)], "refusal": None}}]}
    choice = restore_answer(vault, body)["choices"][0]
    assert choice["message"]["content"] == "to ann@x.org"
    assert [(e["token"], e["logprob"]) for e in choice["logprobs"]["content"]] == [
        ("to ann@x.org", -3.0)]


@pytest.mark.parametrize("size", [1, 3, 5])
def test_json_mode_logprobs_tokens_spell_the_content(size: int) -> None:
    """In JSON mode the content's logprobs tokens are restored escaped, as the content is, so
    they still spell it (OpenAI's tokens join to the content), streamed and unary."""
    vault = vault_of(PEM)
    document = '{"reply": "key <SECRET_1> end"}'
    restorer = StreamRestorer(vault)
    content, tokens = "", []
    parts = pieces(document, size)
    for i, piece in enumerate([*parts, ""]):
        ending = i == len(parts)
        choice: dict[str, Any] = {
            "index": 0, "finish_reason": "stop" if ending else None,
            "delta": {} if ending else {"content": piece},
            "logprobs": None if ending else {"content": [entry(piece, -0.1)], "refusal": None}}
        restored = restore_chunk(restorer, {"choices": [choice]},
                                 json_content=True)["choices"][0]
        content += restored["delta"].get("content") or ""
        if restored["logprobs"] is not None:
            tokens += [e["token"] for e in restored["logprobs"]["content"]]
    assert json.loads(content) == {"reply": f"key {PEM} end"}
    assert "".join(tokens) == content

    body = {"choices": [{"index": 0, "message": {"content": document},
                         "logprobs": {"content": [entry(p, -0.1) for p in parts],
                                      "refusal": None}}]}
    choice = restore_answer(vault, body, json_content=True)["choices"][0]
    assert "".join(e["token"] for e in choice["logprobs"]["content"]) \
        == choice["message"]["content"]
    assert json.loads(choice["message"]["content"]) == {"reply": f"key {PEM} end"}
