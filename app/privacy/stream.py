"""Placeholders restored in answers: a unary answer whole (``restore_answer``; a native
Messages answer: ``restore_message``), streamed chunks as they pass (``restore_chunk``;
``StreamRestorer`` holds back only a tail that could still be a placeholder's start).

Where the restored text is a JSON document (tool calls' ``arguments``, an Anthropic
``input_json_delta``'s ``partial_json``, and the content of a JSON-mode answer: ``response_format``
``json_object`` or ``json_schema``, or a native Messages answer's text under structured output,
``output_config.format``) a placeholder stands inside a JSON string, so its value goes
back JSON-escaped (``Vault.restore_json``): a value with a newline, a ``"`` or a ``\\`` (a PEM
key) leaves the document valid, and its string holds the value.

The parts of a stream restored, each with its own buffer: a choice's ``delta.content``,
``delta.reasoning_content`` and ``delta.refusal`` (chat), its ``text`` (completions), each tool
call's ``function.arguments`` (a custom tool call's ``custom.input``, as plain text) and a legacy
``function_call``'s ``arguments``, the tokens of its
``logprobs`` (chat: ``content`` and ``refusal``; completions: the legacy ``tokens`` list, its
parallel ``token_logprobs``, ``top_logprobs`` and ``text_offset`` rebuilt to match); and, for a
``/v1/messages`` stream from a native target, the upstream's own ``content_block_delta`` events
carried on the chunk (``NATIVE_EVENTS``: their ``text`` and ``partial_json``; not
``thinking``, which Anthropic signs, nor a chat delta's ``thinking_blocks``).
A logprobs entry whose token may be part of a placeholder is held back whole; the entries that
spelled a placeholder go out as one entry, its token the value, its ``logprob`` their sum (the
value's probability), its ``top_logprobs`` the first's (restored: a chat alternative's token, a
legacy alternative's key). A legacy entry's ``text_offset`` moves to where its token starts in
the restored text: by how much longer the choice's restored text (an echoed prompt included)
and, where the offsets count from the prompt, its restored prompt grew before it
(``app.privacy.offsets``). A native delta whose text is all held back is not sent
(Anthropic sends no empty deltas). A
part's held tail goes out with its choice's ``finish_reason`` chunk, or, for a native block, as
one more delta right before its ``content_block_stop``; what is still held when the stream ends
without them goes out in one more chunk (``release``).

(Over 400 lines: restoring placeholders in every place an answer carries text, chat and legacy
chunks, native blocks, tool arguments and JSON, whole and streamed, one ``Vault`` each; split by
wire shape, each part would repeat the held-tail bookkeeping they share.)
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from functools import partial
from typing import Any

import orjson

from app.privacy.offsets import Offsets, Prompts
from app.privacy.placeholders import StreamRestorer, Vault
from app.privacy.walk import rewrite
from app.providers.base import NATIVE_EVENTS, Json

_DELTA_FIELDS = ("content", "reasoning_content", "refusal")
_LOGPROB_PARTS = ("content", "refusal")
_LEGACY = "tokens"
"""The part of a completion's legacy logprobs (key ``(index, "logprobs", "tokens")``)."""
_LEGACY_COLUMNS = (("token_logprobs", "logprob"), ("top_logprobs", "top_logprobs"),
                   ("text_offset", "text_offset"))
"""A legacy logprobs list beside ``tokens``, and its field in an entry (chat's names)."""
_FUNCTION = "function_call"
_CUSTOM = "custom"
"""The part of a custom tool call's ``custom.input`` (key ``(index, "custom", call index)``)."""
_NATIVE_FIELDS = {"text_delta": "text", "input_json_delta": "partial_json"}
"""A native delta's restored field by its type: not ``thinking_delta``, whose text Anthropic
signs (a thinking block is sent back as it came: ``walk``)."""
_NATIVE_JSON = "partial_json"
Merge = Callable[..., dict[str, Any]]
"""How held logprobs entries go out as one: ``merge(held, tail="")`` (``_merged``)."""


def restore_answer(vault: Vault, body: Json, *, json_content: bool = False,
                   prompts: Prompts | None = None) -> Json:
    """``body`` (a unary answer) with its placeholders restored; ``json_content``: its choices'
    content is a JSON document (JSON mode); ``prompts``: a completion's, as the upstream got
    them (where its ``text_offset``s count from: ``app.privacy.offsets``)."""
    choices = body.get("choices")
    if isinstance(choices, list):
        body = {**body, "choices": [_answer_choice(vault, c, json_content, prompts)
                                    if isinstance(c, dict) else c for c in choices]}
    restored: Json = rewrite(body, vault.restore)  # the rest: restored as plain text
    return restored


def restore_message(vault: Vault, message: Json, *, json_content: bool = False) -> Json:
    """``message`` (a native Messages answer) with its placeholders restored; ``json_content``:
    its text blocks are a JSON document's (structured output), restored escaped."""
    content = message.get("content")
    if json_content and isinstance(content, list):
        message = {**message, "content": [
            {**block, "text": vault.restore_json(block["text"])}
            if isinstance(block, dict) and block.get("type") == "text"
            and isinstance(block.get("text"), str) else block for block in content]}
    restored: Json = rewrite(message, vault.restore)  # the rest: restored as plain text
    return restored


def _answer_choice(vault: Vault, choice: dict[str, Any], json_content: bool,
                   prompts: Prompts | None) -> dict[str, Any]:
    """A unary choice with its JSON text and logprobs restored (``restore_answer``)."""
    choice = dict(choice)
    message = choice.get("message")
    if isinstance(message, dict):
        message = choice["message"] = dict(message)
        if json_content and isinstance(message.get("content"), str):
            message["content"] = vault.restore_json(message["content"])
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            message["tool_calls"] = [_arguments(c, vault.restore_json) for c in calls]
        if isinstance(message.get("function_call"), dict):
            message["function_call"] = _arguments({"function": message["function_call"]},
                                                  vault.restore_json)["function"]
    if isinstance(choice.get("logprobs"), dict):
        restorer = StreamRestorer(vault)
        if isinstance(choice.get("text"), str):
            _offsets(restorer, choice.get("index", 0), prompts).fed(choice["text"])
        choice["logprobs"] = _logprobs(restorer, choice.get("index", 0),
                                       choice["logprobs"], ending=True,
                                       json_content=json_content)
    return choice


def _arguments(call: Any, restore: Any) -> Any:
    """A tool call with its ``function.arguments`` passed through ``restore``."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("arguments"), str):
        return call
    return {**call, "function": {**function, "arguments": restore(function["arguments"])}}


def restore_chunk(restorer: StreamRestorer, chunk: Json, *, json_content: bool = False,
                  prompts: Prompts | None = None) -> Json:
    """``chunk`` with its placeholders restored (a rewritten copy where anything changed);
    ``json_content``: its choices' content is a JSON document's (JSON mode); ``prompts``: a
    completion's, as the upstream got them (``restore_answer``)."""
    choices = chunk.get("choices")
    if choices:
        chunk = {**chunk, "choices": [_choice(restorer, c, json_content, prompts)
                                      if isinstance(c, dict) else c for c in choices]}
    carried = chunk.get(NATIVE_EVENTS)
    if carried:
        chunk = {**chunk, NATIVE_EVENTS: _native(restorer, carried, json_content)}
    return chunk


def _choice(restorer: StreamRestorer, choice: dict[str, Any], json_content: bool,
            prompts: Prompts | None) -> dict[str, Any]:
    index = choice.get("index", 0)
    ending = choice.get("finish_reason") is not None
    choice = dict(choice)
    text = choice.get("text")
    if isinstance(text, str) or ("text" in choice and ending):
        out = restorer.cut((index, "text"), text or "")
        _offsets(restorer, index, prompts).fed(out)
        out = restorer.vault.restore(out)
        choice["text"] = out + restorer.flush((index, "text")) if ending else out
    delta = choice.get("delta")
    if isinstance(delta, dict):
        choice["delta"] = _delta(restorer, index, delta, ending=ending,
                                 json_content=json_content)
    logprobs = choice.get("logprobs")
    if isinstance(logprobs, dict) or ending:
        choice["logprobs"] = _logprobs(restorer, index, logprobs, ending=ending,
                                       json_content=json_content)
    stop = choice.get("stop_reason")  # vLLM's: the stop sequence that ended it, as sent
    if isinstance(stop, str):
        choice["stop_reason"] = restorer.vault.restore(stop)
    return choice


def _delta(restorer: StreamRestorer, index: Any, delta: dict[str, Any], *, ending: bool,
           json_content: bool) -> dict[str, Any]:
    """A chat choice's ``delta`` restored (``ending``: its choice finishes in this chunk, so
    what its parts hold back goes out)."""
    delta = dict(delta)
    for field in _DELTA_FIELDS:
        piece = delta.get(field)
        if isinstance(piece, str):
            delta[field] = restorer.feed((index, field), piece,
                                         json_text=json_content and field == "content")
        if ending:
            tail = restorer.flush((index, field))
            if tail:
                delta[field] = (delta.get(field) or "") + tail
    calls = delta.get("tool_calls")
    if isinstance(calls, list):
        delta["tool_calls"] = [_tool_call(restorer, index, c) for c in calls]
    call = delta.get(_FUNCTION)
    if isinstance(call, dict):  # legacy: one call, its arguments in pieces (its name first)
        delta[_FUNCTION] = _arguments({"function": call}, lambda text: restorer.feed(
            (index, _FUNCTION), text, json_text=True))["function"]
    if ending:
        _flush_tool_calls(restorer, index, delta)
        tail = restorer.flush((index, _FUNCTION))
        if tail:
            call = delta.get(_FUNCTION)
            call = dict(call) if isinstance(call, dict) else {}
            call["arguments"] = (call.get("arguments") or "") + tail
            delta[_FUNCTION] = call
    return delta


def _tool_call(restorer: StreamRestorer, index: Any, call: Any) -> Any:
    at = call.get("index", 0) if isinstance(call, dict) else 0
    custom = call.get("custom") if isinstance(call, dict) else None
    if isinstance(custom, dict) and isinstance(custom.get("input"), str):
        key = (index, _CUSTOM, at)  # a custom tool's input: free text, not JSON
        return {**call, "custom": {**custom, "input": restorer.feed(key, custom["input"])}}
    key = (index, "tool", at)
    return _arguments(call, lambda text: restorer.feed(key, text, json_text=True))


def _tail_call(kind: str, at: Any, tail: str) -> Json:
    """A tool call delta carrying a held ``tail`` (``kind``: ``"tool"`` or ``_CUSTOM``)."""
    if kind == _CUSTOM:
        return {"index": at, "custom": {"input": tail}}
    return {"index": at, "function": {"arguments": tail}}


def _flush_tool_calls(restorer: StreamRestorer, index: Any, delta: dict[str, Any]) -> None:
    tails = [_tail_call(key[1], key[2], tail) for key in list(restorer.keys())
             if isinstance(key, tuple) and len(key) == 3 and key[0] == index
             and key[1] in ("tool", _CUSTOM) and (tail := restorer.flush(key))]
    if tails:
        delta["tool_calls"] = [*(delta.get("tool_calls") or []), *tails]


def _logprobs(restorer: StreamRestorer, index: Any, logprobs: Any, *, ending: bool,
              json_content: bool = False) -> Any:
    """A chat choice's ``logprobs`` with the tokens of its entries restored (``ending``: the
    choice's text has ended, so what is held back goes out; ``json_content``: the content is a
    JSON document, so its tokens are restored as it is, escaped, and still spell it); ``logprobs``
    itself when it has no entries and nothing was held back. A completion's legacy shape goes
    to ``_legacy_logprobs``."""
    legacy = (index, "logprobs", _LEGACY)
    if (isinstance(logprobs, dict) and isinstance(logprobs.get(_LEGACY), list)) \
            or (ending and restorer.holds(legacy)):
        return _legacy_logprobs(restorer, legacy, logprobs, ending=ending)
    out: dict[str, Any] | None = dict(logprobs) if isinstance(logprobs, dict) else None
    for part in _LOGPROB_PARTS:
        key = (index, "logprobs", part)
        entries = out.get(part) if out is not None else None
        if not isinstance(entries, list):
            if not (ending and restorer.holds(key)):
                continue
            entries = []
        if out is None:
            out = {}
        out[part] = _entries(restorer, key, entries, ending=ending,
                             json_text=json_content and part == "content")
    return logprobs if out is None else out


def _entries(restorer: StreamRestorer, key: object, entries: list[Any], *,
             ending: bool, json_text: bool, merge: Merge | None = None) -> list[Any]:
    """Logprobs entries as they can go out now: one whose token may start a placeholder is
    held back, with those after it, until the text they spell is restored or ruled out; each
    entry or run of held entries goes out as ``merge`` makes it (``_merged``)."""
    if merge is None:
        merge = partial(_merged, restorer.vault)
    out: list[Any] = []
    held = restorer.entries.pop(key, [])
    for entry in entries:
        token = entry.get("token") if isinstance(entry, dict) else None
        if not isinstance(token, str):
            out.append(entry)
            continue
        held.append((entry, restorer.feed(key, token, json_text=json_text)))
        if not restorer.holds(key):
            out.append(merge(held))
            held = []
    tail = restorer.flush(key) if ending else ""
    if held and ending:
        out.append(merge(held, tail))
    elif held:
        restorer.entries[key] = held
    return out


def _merged(vault: Vault, held: list[tuple[Any, str]], tail: str = "") -> dict[str, Any]:
    """One logprobs entry for ``held`` (entries, each with the restored text of it that went
    out) and the ``tail`` still held: the first entry itself when nothing changed."""
    first: dict[str, Any] = held[0][0]
    token = "".join(text for _, text in held) + tail
    alternatives = first.get("top_logprobs")
    restored = _alternatives(vault, alternatives)
    if len(held) == 1 and token == first["token"] and restored is alternatives:
        return first
    entry = {**first, "token": token}
    if isinstance(first.get("bytes"), list):
        entry["bytes"] = list(token.encode())
    logprobs = [e.get("logprob") for e, _ in held]
    if len(held) > 1 and all(isinstance(p, int | float) for p in logprobs):
        entry["logprob"] = sum(logprobs)
    if restored is not alternatives:
        entry["top_logprobs"] = restored
    return entry


def _alternatives(vault: Vault, alternatives: Any) -> Any:
    """An entry's ``top_logprobs`` with their tokens restored: chat's list of entries, or the
    legacy dict keyed by token (where two keys restore to one, the likelier stays);
    ``alternatives`` itself when none changed."""
    if isinstance(alternatives, list):
        if not any(isinstance(a, dict) and isinstance(a.get("token"), str) and "<" in a["token"]
                   for a in alternatives):
            return alternatives
        out = [_merged(vault, [(a, vault.restore(a["token"]))])
               if isinstance(a, dict) and isinstance(a.get("token"), str) else a
               for a in alternatives]
        return alternatives if all(map(operator.is_, out, alternatives)) else out
    if not isinstance(alternatives, dict) or not any(
            isinstance(k, str) and "<" in k for k in alternatives):
        return alternatives
    keyed: dict[Any, Any] = {}
    for token, logprob in alternatives.items():
        token = vault.restore(token) if isinstance(token, str) else token
        known = keyed.get(token)
        if known is None or (isinstance(logprob, int | float) and isinstance(known, int | float)
                             and logprob > known):
            keyed[token] = logprob
    return alternatives if list(keyed) == list(alternatives) else keyed


def _legacy_logprobs(restorer: StreamRestorer, key: tuple[Any, ...], logprobs: Any, *,
                     ending: bool) -> Any:
    """A completion choice's legacy ``logprobs`` (parallel lists), its tokens restored as
    chat entries are (``_entries``), the lists rebuilt from the entries that go out now."""
    entries: list[dict[str, Any]] = []
    tokens = logprobs.get(_LEGACY) if isinstance(logprobs, dict) else None
    if isinstance(tokens, list):
        columns = [(field, column) for name, field in _LEGACY_COLUMNS
                   if isinstance(column := logprobs.get(name), list)
                   and len(column) == len(tokens)]
        entries = [{"token": token, **{field: column[i] for field, column in columns}}
                   for i, token in enumerate(tokens)]
    out = _entries(restorer, key, entries, ending=ending, json_text=False,
                   merge=partial(_legacy_merged, restorer, key))
    return _legacy_lists(out, logprobs)


def _legacy_merged(restorer: StreamRestorer, key: tuple[Any, ...], held: list[tuple[Any, str]],
                   tail: str = "") -> dict[str, Any]:
    """``_merged`` for a legacy entry, its ``text_offset`` moved to where its token starts in
    the restored text (``Offsets``: by what was restored of the choice's text before it, its
    echoed prompt included, and of its prompt where the offsets count from it)."""
    entry = _merged(restorer.vault, held, tail)
    offsets: Offsets | None = restorer.offsets.get(key[0])
    at = entry.get("text_offset")
    if offsets is not None and isinstance(at, int) and not isinstance(at, bool):
        moved = offsets.move(at)
        if moved != at:
            entry = {**entry, "text_offset": moved}
    return entry


def _offsets(restorer: StreamRestorer, index: Any, prompts: Prompts | None) -> Offsets:
    """The ``Offsets`` of completion choice ``index`` (made at its first text)."""
    offsets: Offsets | None = restorer.offsets.get(index)
    if offsets is None:
        offsets = restorer.offsets[index] = Offsets(
            restorer.vault, None if prompts is None else prompts.of(index),
            prompts is not None and prompts.echo)
    return offsets


def _legacy_lists(entries: list[Any], logprobs: Any) -> dict[str, Any]:
    """Legacy ``logprobs`` (``logprobs``' other fields kept) from ``entries``: each list the
    upstream sent, or, where it sent none (a tail released at the end), each the entries hold;
    a list it sent null stays null."""
    out: dict[str, Any] = dict(logprobs) if isinstance(logprobs, dict) else {}
    out[_LEGACY] = [e.get("token") if isinstance(e, dict) else e for e in entries]
    for name, field in _LEGACY_COLUMNS:
        if isinstance(out.get(name), list) or (name not in out and entries and all(
                isinstance(e, dict) and field in e for e in entries)):
            out[name] = [e.get(field) if isinstance(e, dict) else None for e in entries]
    return out


def _native(restorer: StreamRestorer, carried: list[tuple[str, str]],
            json_content: bool) -> list[tuple[str, str]]:
    """A native stream's events restored (``json_content``: its text is a JSON document's)."""
    out: list[tuple[str, str]] = []
    for name, data in carried:
        if name == "message_delta":
            out.append((name, _stop_sequence(restorer, data)))
            continue
        if name not in ("content_block_delta", "content_block_stop"):
            out.append((name, data))
            continue
        payload = orjson.loads(data)
        block = payload.get("index", 0)
        if name == "content_block_stop":
            for kind, field in _NATIVE_FIELDS.items():
                tail = restorer.flush(("native", block, field))
                if tail:
                    out.append(("content_block_delta", orjson.dumps({
                        "type": "content_block_delta", "index": block,
                        "delta": {"type": kind, field: tail}}).decode()))
            out.append((name, data))
            continue
        delta = payload.get("delta")
        wanted = _NATIVE_FIELDS.get(delta.get("type", "")) if isinstance(delta, dict) else None
        if wanted is None or not isinstance(delta, dict) or not isinstance(delta.get(wanted), str):
            out.append((name, data))
            continue
        field = wanted
        restored = restorer.feed(("native", block, field), delta[field], json_text=(
            field == _NATIVE_JSON or (json_content and field == "text")))
        if restored == delta[field]:
            out.append((name, data))
        elif restored:  # all of it held back: no delta (Anthropic never sends an empty one)
            payload["delta"] = {**delta, field: restored}
            out.append((name, orjson.dumps(payload).decode()))
    return out


def _stop_sequence(restorer: StreamRestorer, data: str) -> str:
    """A native ``message_delta`` event's data with its ``stop_sequence`` (the stop sequence
    as the upstream got it) restored."""
    payload = orjson.loads(data)
    delta = payload.get("delta") if isinstance(payload, dict) else None
    if not isinstance(delta, dict) or not isinstance(stop := delta.get("stop_sequence"), str):
        return data
    restored = restorer.vault.restore(stop)
    if restored == stop:
        return data
    payload["delta"] = {**delta, "stop_sequence": restored}
    return orjson.dumps(payload).decode()


def release(restorer: StreamRestorer, base: Json) -> Json | None:
    """A chunk (``base``: the stream's ``id``, ``object``, ``created`` and ``model``) with every
    tail ``restorer`` still holds, each where ``restore_chunk`` would have put it; ``None`` when
    it holds none."""
    choices: dict[Any, dict[str, Any]] = {}
    events: list[tuple[str, str]] = []
    for key in list(restorer.keys()):
        tail = restorer.flush(key)
        if not tail or not isinstance(key, tuple):
            continue
        if key[0] == "native":
            kind = next(k for k, f in _NATIVE_FIELDS.items() if f == key[2])
            events.append(("content_block_delta", orjson.dumps({
                "type": "content_block_delta", "index": key[1],
                "delta": {"type": kind, key[2]: tail}}).decode()))
            continue
        choice = choices.setdefault(key[0], {"index": key[0], "finish_reason": None})
        if key[1] == "text":
            choice["text"] = tail
            continue
        held = restorer.entries.pop(key, []) if key[1] == "logprobs" else []
        if key[1] == "logprobs" and key[2] == _LEGACY:  # a completion's: no delta
            if held:
                choice.setdefault("text", "")
                choice["logprobs"] = _legacy_lists(
                    [_legacy_merged(restorer, key, held, tail)], None)
            continue
        delta = choice.setdefault("delta", {})
        if key[1] == "logprobs":
            if held:
                choice.setdefault("logprobs", {})[key[2]] = [
                    _merged(restorer.vault, held, tail)]
            continue
        if key[1] in ("tool", _CUSTOM):
            delta.setdefault("tool_calls", []).append(_tail_call(key[1], key[2], tail))
        elif key[1] == _FUNCTION:
            delta[_FUNCTION] = {"arguments": tail}
        else:
            delta[key[1]] = tail
    if not choices and not events:
        return None
    chunk: Json = {**base, "choices": list(choices.values())}
    if events:
        chunk[NATIVE_EVENTS] = events
    return chunk
