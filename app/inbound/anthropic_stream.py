"""The gateway's stream items as Anthropic's Messages stream events.

Two kinds of call reach a ``/v1/messages`` stream. A native one (an Anthropic target) brings the
upstream's own events on its chunks (``NATIVE_EVENTS``): they are relayed byte for byte, and
chunks without them (the gateway's estimated usage chunk) are not shown. A translated one
brings OpenAI chunks, which ``EventWriter`` turns into ``message_start``, one
``content_block_start``/``_delta``/``_stop`` run per block (``thinking`` from
``reasoning_content``, ``text``, ``tool_use`` with ``input_json_delta``), ``message_delta``
(stop reason and usage, which OpenAI-style upstreams report only at the end) and
``message_stop``. ``message_start`` carries the input tokens, as Anthropic's does (clients
take them from there): the upstream's count when its first chunk has one, else the gateway's
estimate of the prompt; ``message_delta`` then carries the upstream's count. Keep-alives
become ``ping`` events, and an error after the first byte an ``error`` event, as Anthropic
sends them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

from app import errors
from app.inbound.anthropic import anthropic_usage, error_body, message_id, stop_reason
from app.providers.base import NATIVE_EVENTS, Json
from app.usage import Usage

PING = b'event: ping\ndata: {"type":"ping"}\n\n'


def event(name: str, payload: Json) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class EventWriter:
    """One ``/v1/messages`` stream: ``frame`` each gateway item, ``close`` at its end."""

    def __init__(self, *, model: str, prompt_tokens: Callable[[], int],
                 stops: Sequence[str] = ()) -> None:
        """``prompt_tokens``: the gateway's estimate of the prompt's tokens (asked for only by
        a translated stream whose first chunk reports no usage); ``stops``: the request's stop
        sequences."""
        self.model = model
        self.stops = stops
        self.prompt_tokens = prompt_tokens
        self.native: bool | None = None
        """Whether the call is native (decided by its first chunk)."""
        self.started = False
        self.block: str | None = None
        """The type of the open content block."""
        self.index = -1
        self.tools: dict[int, int] = {}
        """OpenAI tool call index -> content block index."""
        self.stop: str | None = None
        self.stop_sequence: str | None = None
        self.usage: Usage | None = None

    def frame(self, item: Json | None) -> bytes:
        if item is None:
            return PING
        carried = item.get(NATIVE_EVENTS)
        if self.native is None:
            self.native = carried is not None
        if self.native:
            if not carried:
                return b""
            return b"".join(b"event: " + name.encode() + b"\ndata: " + data.encode() + b"\n\n"
                            for name, data in carried)
        return b"".join(self._translate(item))

    def error(self, exc: errors.GatewayError) -> bytes:
        return event("error", error_body(exc))

    def close(self) -> bytes:
        """The events that end a translated stream (nothing for a native one: the upstream's
        ``message_stop`` has gone out)."""
        if self.native:
            return b""
        out = [] if self.started else [self._start({})]
        out += self._close_block()
        usage = anthropic_usage(self.usage)
        if self.usage is None:  # none reported: the estimate message_start gave stands
            usage["input_tokens"] = self.prompt_tokens()
        out.append(event("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": self.stop or "end_turn",
                      "stop_sequence": self.stop_sequence},
            "usage": usage}))
        out.append(event("message_stop", {"type": "message_stop"}))
        return b"".join(out)

    def _start(self, chunk: Json) -> bytes:
        self.started = True
        model = chunk.get("model")
        message: Json = {
            "id": message_id(chunk.get("id")), "type": "message", "role": "assistant",
            "model": model if isinstance(model, str) and model else self.model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": anthropic_usage(self.usage)["input_tokens"]
                      if self.usage is not None else self.prompt_tokens(),
                      "output_tokens": 0}}
        return event("message_start", {"type": "message_start", "message": message})

    def _open(self, kind: str, block: Json) -> list[bytes]:
        out = self._close_block()
        self.index += 1
        self.block = kind
        out.append(event("content_block_start", {"type": "content_block_start",
                                                  "index": self.index, "content_block": block}))
        return out

    def _close_block(self) -> list[bytes]:
        if self.block is None:
            return []
        self.block = None
        return [event("content_block_stop", {"type": "content_block_stop",
                                              "index": self.index})]

    def _delta(self, delta: Json, index: int | None = None) -> bytes:
        return event("content_block_delta", {"type": "content_block_delta",
                                              "index": self.index if index is None else index,
                                              "delta": delta})

    def _translate(self, chunk: Json) -> list[bytes]:
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = Usage.from_openai(usage) or self.usage
        out = [] if self.started else [self._start(chunk)]
        choices = chunk.get("choices")
        choice: Any = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
            return out
        delta = choice.get("delta")
        if isinstance(delta, dict):
            out += self._content(delta)
        if isinstance(choice.get("finish_reason"), str) and self.stop != "refusal":
            # a refusal's text came first: its stop reason stands, as in an answer
            self.stop, self.stop_sequence = stop_reason(choice, self.stops)
        return out

    def _content(self, delta: Json) -> list[bytes]:
        out: list[bytes] = []
        thought = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(thought, str) and thought:
            if self.block != "thinking":
                out += self._open("thinking", {"type": "thinking", "thinking": "",
                                               "signature": ""})
            out.append(self._delta({"type": "thinking_delta", "thinking": thought}))
        for key in ("content", "refusal"):
            text = delta.get(key)
            if isinstance(text, str) and text:
                if key == "refusal":
                    self.stop = "refusal"
                if self.block != "text":
                    out += self._open("text", {"type": "text", "text": ""})
                out.append(self._delta({"type": "text_delta", "text": text}))
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                out += self._tool(call)
        return out

    def _tool(self, call: Json) -> list[bytes]:
        out: list[bytes] = []
        position = call.get("index", 0)
        found = call.get("function")
        function: Json = found if isinstance(found, dict) else {}
        if position not in self.tools:
            out += self._open("tool_use", {"type": "tool_use", "id": str(call.get("id") or ""),
                                           "name": str(function.get("name") or ""),
                                           "input": {}})
            self.tools[position] = self.index
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            out.append(self._delta({"type": "input_json_delta", "partial_json": arguments},
                                   self.tools[position]))
        return out
