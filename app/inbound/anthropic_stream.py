"""The gateway's stream items as Anthropic's Messages stream events.

Two kinds of call reach a ``/v1/messages`` stream. A native one (an Anthropic target) brings the
upstream's own events on its chunks (``NATIVE_EVENTS``): they are relayed byte for byte, and
chunks without them (the gateway's estimated usage chunk) are not shown. A translated one
brings OpenAI chunks, which ``EventWriter`` turns into ``message_start``, one
``content_block_start``/``_delta``/``_stop`` run per block (``thinking`` from
``reasoning_content``, ``text``, ``tool_use`` with ``input_json_delta``), ``message_delta``
(stop reason and usage, which OpenAI-style upstreams report only at the end) and
``message_stop``.

Anthropic sends one block at a time, each whole (start, deltas, stop) before the next starts,
and clients act on a block at its stop (the SDK's ``messages.stream()`` hands the finished
``tool_use`` block over then). An OpenAI-style upstream may interleave its parallel tool calls'
argument deltas, and keep sending a call's arguments after another call, or text, began. So a
block stays open until a later one has begun and it is whole (a ``tool_use`` block: its
arguments so far a whole JSON value; text or thinking at any time, more of it going on in a new
block); what comes for a later block meanwhile is held and sent when that block starts, as one
delta. A call whose arguments never become whole keeps the blocks after it waiting until the
end. Tool calls are told apart by their ``index`` (by ``id`` where a non-conforming server
sends none).

``message_start`` carries the input tokens, as Anthropic's does (clients
take them from there): the upstream's count when its first chunk has one, else the gateway's
estimate of the prompt; ``message_delta`` then carries the upstream's count. Keep-alives
become ``ping`` events, and an error after the first byte an ``error`` event, as Anthropic
sends them (a translated stream whose upstream ended it without a ``finish_reason`` too: the
answer was cut short, as a native one ending before ``message_stop`` is); a keep-alive before
``message_start`` (a slow first token) is an SSE comment instead, since Anthropic's streams
begin with ``message_start`` and a client may expect it first (every SSE parser skips
comments).
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
KEEP_ALIVE = b": keep-alive\n\n"
"""A keep-alive before the stream's first event: an SSE comment."""
TRUNCATED = "upstream stream ended without a finish_reason; the answer is truncated"
"""The ``error`` event's message for a translated stream that ended without a stop reason."""


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
        self.index = -1
        """The index of the last content block started."""
        self.blocks: list[_Block] = []
        """The blocks begun and not yet stopped, in the order they began: the first is the open
        one, the others wait for it to stop (their deltas held)."""
        self.tools: dict[int | str, _Block] = {}
        """Each tool call's block, by its ``index`` (or its ``id``, sent without one)."""
        self.last_tool: _Block | None = None
        self.stop: str | None = None
        self.finished = False
        """Whether the upstream gave the answer a ``finish_reason`` (else it was cut short)."""
        self.stop_sequence: str | None = None
        self.usage: Usage | None = None

    def frame(self, item: Json | None) -> bytes:
        if item is None:
            return PING if self.started or self.native else KEEP_ALIVE
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

    def check_end(self) -> None:
        """Called when the upstream's stream has ended well, every chunk framed
        (``app.gateway.STREAM_END``): a translated one that gave no ``finish_reason`` (it sent
        ``[DONE]`` without one) was cut short, a ``BadUpstreamResponse`` that fails the call
        (its record, its target's breaker) and ends the stream with an ``error`` event, as a
        native one ending before ``message_stop`` does, not with a ``stop_reason`` it never
        had."""
        if not self.native and not self.finished:
            raise errors.BadUpstreamResponse(TRUNCATED)

    def close(self) -> bytes:
        """The events that end a translated stream (nothing for a native one: the upstream's
        ``message_stop`` has gone out). One that gave no ``finish_reason`` ends with an
        ``error`` event (``check_end`` fails its call before it gets here)."""
        if self.native:
            return b""
        out = [] if self.started else [self._start({})]
        if not self.finished:
            out.append(self.error(errors.BadUpstreamResponse(TRUNCATED)))
            return b"".join(out)
        out += self._close_blocks()
        usage = anthropic_usage(self.usage)
        if self.usage is None:  # none reported: the estimate message_start gave stands
            usage["input_tokens"] = self.prompt_tokens()
        out.append(event("message_delta", {
            "type": "message_delta",
            "delta": {"stop_reason": self.stop,
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

    def _add(self, block: _Block, piece: str) -> list[bytes]:
        """``piece`` of ``block``'s content: sent if the block is open, else held; then the
        blocks that can start or stop do."""
        if block.kind == "tool_use":
            block.pieces.append(piece)
        if block.stopped:  # a tool call's, once its arguments were whole: more would spoil them
            return []
        if block.index < 0:
            block.held.append(piece)
            return self._advance()
        return [self._delta(block, piece), *self._advance()]

    def _advance(self) -> list[bytes]:
        """Start the first block waiting, and stop it (then start the next) once a later block
        has begun and it is whole: a text or thinking block always is, a ``tool_use`` block once
        its arguments are a whole JSON value."""
        out: list[bytes] = []
        while self.blocks:
            head = self.blocks[0]
            if head.index < 0:
                out += self._begin(head)
            if len(self.blocks) == 1 or not head.whole():
                break
            out.append(self._stop(self.blocks.pop(0)))
        return out

    def _begin(self, block: _Block) -> list[bytes]:
        self.index += 1
        block.index = self.index
        out = [event("content_block_start", {"type": "content_block_start",
                                              "index": block.index,
                                              "content_block": block.start})]
        if block.held:
            out.append(self._delta(block, "".join(block.held)))
            block.held = []
        return out

    def _stop(self, block: _Block) -> bytes:
        block.stopped = True
        return event("content_block_stop", {"type": "content_block_stop", "index": block.index})

    def _close_blocks(self) -> list[bytes]:
        out: list[bytes] = []
        for block in self.blocks:
            if block.index < 0:
                out += self._begin(block)
            out.append(self._stop(block))
        self.blocks.clear()
        return out

    def _delta(self, block: _Block, piece: str) -> bytes:
        return event("content_block_delta", {"type": "content_block_delta",
                                              "index": block.index,
                                              "delta": {"type": DELTAS[block.kind],
                                                        FIELDS[block.kind]: piece}})

    def _flowing(self, kind: str, start: Json) -> _Block:
        """The block text or thinking goes on in: the newest one begun, when of ``kind``, else
        a new one."""
        if self.blocks and self.blocks[-1].kind == kind:
            return self.blocks[-1]
        block = _Block(kind, start)
        self.blocks.append(block)
        return block

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
        if isinstance(choice.get("finish_reason"), str):
            self.finished = True
            if self.stop != "refusal":
                # a refusal's text came first: its stop reason stands, as in an answer
                self.stop, self.stop_sequence = stop_reason(choice, self.stops)
        return out

    def _content(self, delta: Json) -> list[bytes]:
        out: list[bytes] = []
        thought = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(thought, str) and thought:
            out += self._add(self._flowing("thinking", {"type": "thinking", "thinking": "",
                                                        "signature": ""}), thought)
        for key in ("content", "refusal"):
            text = delta.get(key)
            if isinstance(text, str) and text:
                if key == "refusal":
                    self.stop = "refusal"
                out += self._add(self._flowing("text", {"type": "text", "text": ""}), text)
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                out += self._tool(call)
        return out

    def _tool(self, call: Json) -> list[bytes]:
        """A tool call's delta. A call is known by its ``index``; one without (as some
        OpenAI-compatible servers send them) by its ``id``, a new id beginning a new call, and a
        delta with neither goes on the call begun last."""
        found = call.get("function")
        function: Json = found if isinstance(found, dict) else {}
        position, tool_id = call.get("index"), call.get("id")
        key: int | str | None = None
        if isinstance(position, int) and not isinstance(position, bool):
            key = position
        elif isinstance(tool_id, str) and tool_id:
            key = tool_id
        block = self.tools.get(key) if key is not None else self.last_tool
        out: list[bytes] = []
        if block is None:
            block = _Block("tool_use", {"type": "tool_use", "id": str(tool_id or ""),
                                        "name": str(function.get("name") or ""), "input": {}})
            self.blocks.append(block)
            if key is not None:
                self.tools[key] = block
            out += self._advance()
        self.last_tool = block
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            out += self._add(block, arguments)
        return out


DELTAS = {"thinking": "thinking_delta", "text": "text_delta", "tool_use": "input_json_delta"}
FIELDS = {"thinking": "thinking", "text": "text", "tool_use": "partial_json"}


class _Block:
    """A content block of a translated stream, from the upstream's first delta of it to its
    ``content_block_stop``."""

    __slots__ = ("_tried", "held", "index", "kind", "pieces", "start", "stopped")

    def __init__(self, kind: str, start: Json) -> None:
        self.kind = kind
        self.start = start
        """Its ``content_block_start``'s ``content_block``."""
        self.index = -1
        """Its index in the message, once started."""
        self.held: list[str] = []
        """What came for it before it started (another block was open)."""
        self.pieces: list[str] = []
        """A ``tool_use`` block's arguments so far."""
        self.stopped = False
        self._tried = 0
        """How many pieces its arguments had when they were last found not whole."""

    def whole(self) -> bool:
        """Whether it may stop: a text or thinking block at any time (more text goes on in a
        new block), a ``tool_use`` block once its arguments are a whole JSON value (nothing
        valid can follow one; only checked when they end as an object or array does)."""
        if self.kind != "tool_use":
            return True
        if self._tried == len(self.pieces) or not self.pieces[-1].rstrip().endswith(("}", "]")):
            return False
        try:
            orjson.loads("".join(self.pieces))
        except orjson.JSONDecodeError:
            self._tried = len(self.pieces)
            return False
        return True
