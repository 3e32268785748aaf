"""Placeholders restored in streamed chunks, as they pass (``StreamRestorer`` holds back only
a tail that could still be a placeholder's start).

The parts restored, each with its own buffer: a choice's ``delta.content`` and
``delta.reasoning_content`` (chat), its ``text`` (completions), each tool call's
``function.arguments``; and, for a ``/v1/messages`` stream from a native target, the upstream's
own ``content_block_delta`` events carried on the chunk (``NATIVE_EVENTS``: their ``text``,
``thinking`` and ``partial_json``). A part's held tail goes out with its choice's
``finish_reason`` chunk, or, for a native block, as one more delta right before its
``content_block_stop``; what is still held when the stream ends without them goes out in one
more chunk (``release``).
"""

from __future__ import annotations

from typing import Any

import orjson

from app.privacy.placeholders import StreamRestorer
from app.providers.base import NATIVE_EVENTS, Json

_DELTA_FIELDS = ("content", "reasoning_content")
_NATIVE_FIELDS = {"text_delta": "text", "thinking_delta": "thinking",
                  "input_json_delta": "partial_json"}


def restore_chunk(restorer: StreamRestorer, chunk: Json) -> Json:
    """``chunk`` with its placeholders restored (a rewritten copy where anything changed)."""
    choices = chunk.get("choices")
    if choices:
        chunk = {**chunk, "choices": [_choice(restorer, c) if isinstance(c, dict) else c
                                      for c in choices]}
    carried = chunk.get(NATIVE_EVENTS)
    if carried:
        chunk = {**chunk, NATIVE_EVENTS: _native(restorer, carried)}
    return chunk


def _choice(restorer: StreamRestorer, choice: dict[str, Any]) -> dict[str, Any]:
    index = choice.get("index", 0)
    ending = choice.get("finish_reason") is not None
    choice = dict(choice)
    text = choice.get("text")
    if isinstance(text, str) or ("text" in choice and ending):
        out = restorer.feed((index, "text"), text or "")
        choice["text"] = out + restorer.flush((index, "text")) if ending else out
    delta = choice.get("delta")
    if isinstance(delta, dict):
        delta = dict(delta)
        for field in _DELTA_FIELDS:
            piece = delta.get(field)
            if isinstance(piece, str):
                delta[field] = restorer.feed((index, field), piece)
            if ending:
                tail = restorer.flush((index, field))
                if tail:
                    delta[field] = (delta.get(field) or "") + tail
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            delta["tool_calls"] = [_tool_call(restorer, index, c) for c in calls]
        if ending:
            _flush_tool_calls(restorer, index, delta)
        choice["delta"] = delta
    return choice


def _tool_call(restorer: StreamRestorer, index: Any, call: Any) -> Any:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("arguments"), str):
        return call
    key = (index, "tool", call.get("index", 0))
    return {**call, "function": {**function,
                                 "arguments": restorer.feed(key, function["arguments"])}}


def _flush_tool_calls(restorer: StreamRestorer, index: Any, delta: dict[str, Any]) -> None:
    tails = [(key[2], tail) for key in list(restorer.keys())
             if isinstance(key, tuple) and len(key) == 3 and key[0] == index
             and (tail := restorer.flush(key))]
    if tails:
        delta["tool_calls"] = [*(delta.get("tool_calls") or []),
                               *({"index": i, "function": {"arguments": t}} for i, t in tails)]


def _native(restorer: StreamRestorer, carried: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name, data in carried:
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
        restored = restorer.feed(("native", block, field), delta[field])
        if restored == delta[field]:
            out.append((name, data))
        else:
            payload["delta"] = {**delta, field: restored}
            out.append((name, orjson.dumps(payload).decode()))
    return out


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
        delta = choice.setdefault("delta", {})
        if key[1] == "tool":
            delta.setdefault("tool_calls", []).append(
                {"index": key[2], "function": {"arguments": tail}})
        else:
            delta[key[1]] = tail
    if not choices and not events:
        return None
    chunk: Json = {**base, "choices": list(choices.values())}
    if events:
        chunk[NATIVE_EVENTS] = events
    return chunk
