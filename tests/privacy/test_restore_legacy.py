"""Restoring the legacy OpenAI shapes: a completion's ``logprobs`` (parallel ``tokens``,
``token_logprobs``, ``top_logprobs`` and ``text_offset`` lists) and a chat answer's
``function_call`` (pre-tools), unary and streamed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.privacy.detect import Finding
from app.privacy.offsets import Prompts
from app.privacy.placeholders import StreamRestorer, Vault
from app.privacy.stream import release, restore_answer, restore_chunk

EMAIL = "ann@x.org"
PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\n-----END PRIVATE KEY-----"
TOKENS = ["Hi", " <", "EMAIL", "_", "1", ">", " ok"]
"""A text whose placeholder spans five tokens."""


def vault_of(entity: str, *values: str) -> Vault:
    """A vault that issued ``<ENTITY_1>``... for ``values`` in order."""
    vault = Vault()
    for value in values:
        vault.redact(value, [Finding(entity, 0, len(value))])
    return vault


def legacy(tokens: list[str], start: int = 0) -> dict[str, Any]:
    """Legacy completions ``logprobs`` for ``tokens``: logprob -1 each, two alternatives (the
    token itself and ``"<EMAIL_1>"``), offsets from ``start``."""
    offsets = [start + sum(map(len, tokens[:i])) for i in range(len(tokens))]
    return {"tokens": list(tokens), "token_logprobs": [-1.0] * len(tokens),
            "top_logprobs": [{t: -1.0, "<EMAIL_1>": -3.0} for t in tokens],
            "text_offset": offsets}


def test_unary_legacy_logprobs_restored() -> None:
    """A completion's logprobs: the tokens spelling a placeholder become one token, the value,
    with their summed logprob and the first's alternatives (their keys restored); the tokens
    still spell the text, and each offset is where its token starts in the restored text."""
    text = "".join(TOKENS)
    body = {"object": "text_completion", "choices": [
        {"index": 0, "text": text, "finish_reason": "stop", "logprobs": legacy(TOKENS)}]}
    choice = restore_answer(vault_of("EMAIL", EMAIL), body)["choices"][0]
    logprobs = choice["logprobs"]
    assert choice["text"] == f"Hi {EMAIL} ok"
    assert logprobs["tokens"] == ["Hi", f" {EMAIL}", " ok"]
    assert "".join(logprobs["tokens"]) == choice["text"]
    assert logprobs["token_logprobs"] == [-1.0, -5.0, -1.0]
    assert logprobs["top_logprobs"] == [{"Hi": -1.0, EMAIL: -3.0}, {" <": -1.0, EMAIL: -3.0},
                                        {" ok": -1.0, EMAIL: -3.0}]
    assert logprobs["text_offset"] == [0, 2, 2 + len(f" {EMAIL}")]
    assert all(choice["text"].startswith(token, offset)
               for token, offset in zip(logprobs["tokens"], logprobs["text_offset"],
                                        strict=True))


def test_unary_legacy_logprobs_echo_and_nulls() -> None:
    """An echoed prompt's first token (its logprob and alternatives null) keeps its nulls;
    columns the upstream left null stay null."""
    tokens = ["<", "EMAIL_1>", " said"]
    body = {"choices": [{"index": 0, "text": "".join(tokens), "logprobs": {
        "tokens": tokens, "token_logprobs": [None, -1.0, -1.0], "top_logprobs": None,
        "text_offset": [0, 1, 9]}}]}
    logprobs = restore_answer(vault_of("EMAIL", EMAIL), body)["choices"][0]["logprobs"]
    assert logprobs == {"tokens": [EMAIL, " said"], "token_logprobs": [None, -1.0],
                        "top_logprobs": None, "text_offset": [0, len(EMAIL)]}


@pytest.mark.parametrize("per_chunk", [1, 2, 3])
def test_streamed_legacy_logprobs_restored(per_chunk: int) -> None:
    """Streamed, however the tokens fall into chunks: no token is a placeholder's piece, the
    tokens spell the restored text, the offsets move by what was restored before them."""
    restorer = StreamRestorer(vault_of("EMAIL", EMAIL))
    text, tokens, offsets, logprobs = "", [], [], []
    groups = [TOKENS[i:i + per_chunk] for i in range(0, len(TOKENS), per_chunk)]
    start = 0
    for group in [*groups, []]:
        choice = {"index": 0, "text": "".join(group),
                  "logprobs": legacy(group, start) if group else None,
                  "finish_reason": None if group else "stop"}
        start += len("".join(group))
        out = restore_chunk(restorer, {"choices": [choice]})["choices"][0]
        text += out["text"]
        if out["logprobs"] is not None:
            tokens += out["logprobs"]["tokens"]
            offsets += out["logprobs"]["text_offset"]
            logprobs += out["logprobs"]["token_logprobs"]
    assert text == f"Hi {EMAIL} ok" and "".join(tokens) == text
    assert tokens == ["Hi", f" {EMAIL}", " ok"] and logprobs == [-1.0, -5.0, -1.0]
    assert offsets == [0, 2, 2 + len(f" {EMAIL}")]
    assert restorer.held() == 0 and restorer.entries == {}


def test_release_sends_held_legacy_logprobs() -> None:
    """A completions stream that ends without a finish_reason releases the held tokens in the
    legacy shape, with the held text (and no chat ``delta``)."""
    restorer = StreamRestorer(vault_of("EMAIL", EMAIL))
    restore_chunk(restorer, {"choices": [{"index": 0, "text": "a <EMA", "finish_reason": None,
                                          "logprobs": legacy(["a", " <EMA"])}]})
    out = release(restorer, {"id": "x", "object": "text_completion"})
    assert out is not None
    choice = out["choices"][0]
    assert choice["text"] == "<EMA" and "delta" not in choice
    assert choice["logprobs"] == {"tokens": [" <EMA"], "token_logprobs": [-1.0],
                                  "top_logprobs": [{" <EMA": -1.0, EMAIL: -3.0}],
                                  "text_offset": [1]}


def test_streamed_function_call_arguments_restored() -> None:
    """A streamed legacy ``function_call``: its name passes, its arguments (JSON) come back
    whole and escaped, however the placeholder is split; a tail held at the end goes out with
    the finish_reason chunk."""
    restorer = StreamRestorer(vault_of("SECRET", PEM))
    arguments = '{"key": "<SECRET_1>", "n": "<SECRET_1'
    pieces = [arguments[i:i + 3] for i in range(0, len(arguments), 3)]
    deltas: list[dict[str, Any]] = [
        {"role": "assistant", "content": None, "function_call": {"name": "store",
                                                                 "arguments": ""}},
        *({"function_call": {"arguments": piece}} for piece in pieces), {}]
    name, got = "", ""
    for i, delta in enumerate(deltas):
        choice = {"index": 0, "delta": delta,
                  "finish_reason": "function_call" if i == len(deltas) - 1 else None}
        out = restore_chunk(restorer, {"choices": [choice]})["choices"][0]["delta"]
        call = out.get("function_call") or {}
        name += call.get("name") or ""
        got += call.get("arguments") or ""
    assert name == "store"
    assert got == '{"key": ' + json.dumps(PEM) + ', "n": "<SECRET_1'
    assert restorer.held() == 0


def test_release_sends_held_function_call_arguments() -> None:
    """A stream ending without a finish_reason releases a function call's held arguments as
    ``delta.function_call.arguments``."""
    restorer = StreamRestorer(vault_of("SECRET", PEM))
    out = restore_chunk(restorer, {"choices": [{"index": 0, "finish_reason": None, "delta": {
        "function_call": {"arguments": '{"k": "<SECR'}}}]})
    assert out["choices"][0]["delta"]["function_call"] == {"arguments": '{"k": "'}
    released = release(restorer, {"id": "x"})
    assert released is not None
    assert released["choices"][0]["delta"] == {"function_call": {"arguments": "<SECR"}}


def test_alternatives_restored_beside_an_unchanged_token() -> None:
    """A token with no placeholder in it whose alternatives hold one: the alternatives are
    restored, streamed, in chat's list and in the legacy dict alike."""
    vault = vault_of("EMAIL", EMAIL)
    chat = {"token": "Hi", "logprob": -1.0,
            "top_logprobs": [{"token": "Hi", "logprob": -1.0},
                             {"token": "<EMAIL_1>", "logprob": -2.0}]}
    out = restore_chunk(StreamRestorer(vault), {"choices": [{
        "index": 0, "delta": {"content": "Hi"}, "finish_reason": None,
        "logprobs": {"content": [chat], "refusal": None}}]})
    entry = out["choices"][0]["logprobs"]["content"][0]
    assert [a["token"] for a in entry["top_logprobs"]] == ["Hi", EMAIL]
    out = restore_chunk(StreamRestorer(vault), {"choices": [{
        "index": 0, "text": "Hi", "finish_reason": None, "logprobs": legacy(["Hi"])}]})
    assert out["choices"][0]["logprobs"]["top_logprobs"] == [{"Hi": -1.0, EMAIL: -3.0}]


def test_streamed_echoed_prompt_moves_offsets() -> None:
    """vLLM's echo: the redacted prompt streamed first as text alone, the generated tokens'
    offsets counted after it; each moves by what the restored prompt grew, and a token inside
    a placeholder's span points at where its value starts."""
    restorer = StreamRestorer(vault_of("EMAIL", EMAIL))
    prompts = Prompts(("<EMAIL_1> is",), 1, True)
    grown = len(EMAIL) - len("<EMAIL_1>")
    chunks = [{"index": 0, "text": "<EMAIL_1> is", "logprobs": None, "finish_reason": None},
              {"index": 0, "text": " ok", "logprobs": legacy([" ok"], 12),
               "finish_reason": None},
              {"index": 0, "text": "", "logprobs": legacy(["x"], 3), "finish_reason": "stop"}]
    out = [restore_chunk(restorer, {"choices": [c]}, prompts=prompts)["choices"][0]
           for c in chunks]
    assert "".join(c["text"] for c in out) == f"{EMAIL} is ok"
    assert out[1]["logprobs"]["text_offset"] == [12 + grown]
    assert out[2]["logprobs"]["text_offset"] == [0]


def test_unary_offsets_counted_from_the_prompt() -> None:
    """OpenAI's way without echo: offsets count from the start of the prompt (as the upstream
    got it), so they move by what the restored prompt grew; a choice of a prompt without
    placeholders keeps its offsets, and an upstream counting from the text's start (vLLM's:
    the first offset 0) is left to the text alone."""
    redacted = "to <EMAIL_1>:"
    body = {"choices": [
        {"index": 0, "text": " hi <EMAIL_1>", "logprobs": legacy([" hi", " <EMAIL_1>"], 13)},
        {"index": 1, "text": " hi", "logprobs": legacy([" hi"], 3)},
        {"index": 2, "text": " hi <EMAIL_1> x", "logprobs": legacy([" hi", " <EMAIL_1>", " x"])},
    ]}
    prompts = Prompts((redacted, "ab:", redacted), 1, False)
    choices = restore_answer(vault_of("EMAIL", EMAIL), body, prompts=prompts)["choices"]
    start = len(f"to {EMAIL}:")
    assert choices[0]["logprobs"]["text_offset"] == [start, start + 3]
    assert choices[1]["logprobs"]["text_offset"] == [3]
    assert choices[2]["logprobs"]["text_offset"] == [0, 3, 3 + len(f" {EMAIL}")]
