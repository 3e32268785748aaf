"""Cohere Chat API v2 stream events -> OpenAI ``chat.completion.chunk`` dicts.

Cohere streams server-sent events, each an ``event: <type>`` line and a ``data:`` line holding
a JSON object whose ``type`` repeats the event name (the API reference's examples; the official
SDK reads the ``data`` alone and dispatches on its ``type``). A text answer is ``message-start``,
``content-start``, ``content-delta``..., ``content-end``, ``message-end``; a tool-calling one has
``tool-plan-delta``... then per call ``tool-call-start``, ``tool-call-delta``...,
``tool-call-end``; grounded answers add ``citation-start``/``citation-end``. ``message-end``
carries ``finish_reason`` and ``usage``. The translator is fed one parsed event at a time, so it
is tested without a network.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app import errors
from app.providers.base import Json, OpeningHold
from app.providers.cohere_response import (
    failed_generation,
    finish_reason,
    logprobs_entry,
    read_usage,
    stop_sequence,
)
from app.providers.stops import name_stop


def _message(data: Json) -> Json:
    """``delta.message`` of an event (empty when absent)."""
    delta = data.get("delta")
    message = delta.get("message") if isinstance(delta, dict) else None
    return message if isinstance(message, dict) else {}


OPENING = frozenset({"message-start", "content-start"})
"""The events Cohere sends before its model's first token: what they make is held back until
the first other event (``OpeningHold``). A ``content-start`` that carries text goes out with
the next event, a moment later."""


class StreamTranslator:
    """Turns one Cohere v2 event stream into OpenAI chunks.

    ``feed`` returns the chunks an event produces (often none). At ``message-end`` it emits the
    finish chunk and then the usage chunk (``choices: []``; left out only when Cohere reported
    no usage, so the gateway estimates rather than accounts zeros) and ``done`` turns true;
    ``finish`` raises ``BadUpstreamResponse`` when the stream ended before that. Citation,
    ``content-end``, ``tool-call-end`` and ``debug`` events, and event types added after this was
    written, produce nothing.
    """

    def __init__(self, *, model: str, created: int, stops: Sequence[str] = ()) -> None:
        """``stops``: the request's stop sequences (``stop_sequence``)."""
        self.model = model
        self.stops = stops
        self.created = created
        self.id = ""
        self.done = False
        self._tool_index: dict[int, int] = {}
        """Cohere tool-call index -> OpenAI tool call index."""
        self._hold = OpeningHold(OPENING)

    def feed(self, data: Json, *, event: str | None = None) -> list[Json]:
        """The chunks for one event's JSON ``data`` (``event``: the SSE event name, used when
        ``data`` lacks a ``type``). What the opening events (``OPENING``) make is held back and
        comes out with the first other event's chunks: Cohere sends them at once, and the
        gateway's first chunk (its first-chunk timeout, the call's deadline, TTFT) is the
        model's first token (``OpeningHold``)."""
        kind = data.get("type")
        kind = kind if isinstance(kind, str) else event
        return self._hold.release(kind, self._feed(data, kind))

    def _feed(self, data: Json, kind: str | None) -> list[Json]:
        if kind == "message-start":
            if isinstance(data.get("id"), str):
                self.id = data["id"]
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind in ("content-start", "content-delta"):
            return self._content(data)
        if kind == "tool-plan-delta":
            plan = _message(data).get("tool_plan")
            return [self._chunk({"content": plan})] if isinstance(plan, str) and plan else []
        if kind == "tool-call-start":
            return self._tool_call_start(data)
        if kind == "tool-call-delta":
            return self._tool_call_delta(data)
        if kind == "message-end":
            return self._message_end(data)
        return []

    def finish(self) -> None:
        """Call when the upstream stream ends; raises if it ended before ``message-end``."""
        if not self.done:
            raise errors.BadUpstreamResponse("upstream stream ended before message-end")

    def _chunk(self, delta: Json, *, finish: str | None = None,
               logprobs: Json | None = None) -> Json:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs,
                         "finish_reason": finish}],
        }

    def _content(self, data: Json) -> list[Json]:
        content = _message(data).get("content")
        if not isinstance(content, dict):
            return []
        entry = logprobs_entry(data.get("logprobs"))
        logprobs = {"content": [entry]} if entry is not None else None
        text, thinking = content.get("text"), content.get("thinking")
        if isinstance(text, str) and text:
            return [self._chunk({"content": text}, logprobs=logprobs)]
        if isinstance(thinking, str) and thinking:
            return [self._chunk({"reasoning_content": thinking})]
        return []

    def _position(self, index: Any) -> int:
        if not isinstance(index, int):
            raise errors.BadUpstreamResponse("upstream tool-call event lacks an index")
        return self._tool_index.setdefault(index, len(self._tool_index))

    def _tool_call_start(self, data: Json) -> list[Json]:
        call = _message(data).get("tool_calls")
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(call, dict) or not isinstance(call.get("id"), str) \
                or not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise errors.BadUpstreamResponse("upstream tool-call-start lacks an id or name")
        arguments = function.get("arguments")
        out = {"index": self._position(data.get("index")), "id": call["id"], "type": "function",
               "function": {"name": function["name"],
                            "arguments": arguments if isinstance(arguments, str) else ""}}
        return [self._chunk({"tool_calls": [out]})]

    def _tool_call_delta(self, data: Json) -> list[Json]:
        call = _message(data).get("tool_calls")
        function = call.get("function") if isinstance(call, dict) else None
        arguments = function.get("arguments") if isinstance(function, dict) else None
        if not isinstance(arguments, str) or not arguments:
            return []
        index = data.get("index")
        if not isinstance(index, int) or index not in self._tool_index:
            raise errors.BadUpstreamResponse("upstream sent tool arguments for no started call")
        out = {"index": self._tool_index[index], "function": {"arguments": arguments}}
        return [self._chunk({"tool_calls": [out]})]

    def _message_end(self, data: Json) -> list[Json]:
        self.done = True
        delta = data.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        failed_generation(delta.get("finish_reason"), delta.get("error"))
        chunks = [self._chunk({}, finish=finish_reason(delta.get("finish_reason")))]
        name_stop(chunks[0]["choices"][0], stop_sequence(delta.get("finish_reason"), self.stops))
        usage = read_usage(delta.get("usage"))
        if usage is not None:
            chunks.append({"id": self.id, "object": "chat.completion.chunk",
                           "created": self.created, "model": self.model, "choices": [],
                           "usage": usage.to_openai()})
        return chunks
