"""Anthropic streaming events -> OpenAI ``chat.completion.chunk`` dicts.

Anthropic streams ``message_start``, then per content block ``content_block_start`` /
``content_block_delta``... / ``content_block_stop``, then ``message_delta`` (stop reason,
cumulative usage) and ``message_stop``; ``ping`` may come at any time and ``error`` replaces
the rest. The translator is a small state machine fed one parsed event at a time, so it can be
tested without a network.
"""

from __future__ import annotations

from typing import Any

import orjson

from app import errors
from app.providers.anthropic_response import (
    error_from_event,
    finish_reason,
    read_usage,
    thinking_block,
)
from app.providers.base import PROMPT_USAGE, Json
from app.usage import Usage

OPENING_EVENTS = frozenset({"message_start", "ping", "content_block_start"})
"""What Anthropic sends before its model's first token (``message_start`` at once): held by
``anthropic.translated_chunks``/``native_chunks`` (``base.OpeningHold``) until the next event."""


def event_kind(data: Json, event: str | None) -> str | None:
    """An event's type: its data's ``type``, else its SSE event name."""
    kind = data.get("type")
    return kind if isinstance(kind, str) else event


class StreamTranslator:
    """Turns one Anthropic event stream into OpenAI chunks.

    ``feed`` returns the chunks an event produces (often none) and raises the mapped gateway
    error for an ``error`` event. After ``message_stop`` it has emitted the final usage chunk
    (``choices: []``; left out only if the upstream reported no usage at all, so the gateway
    estimates rather than accounts zeros) and ``done`` is true; ``finish`` raises
    ``BadUpstreamResponse`` when the stream ended before that. ``message_start``'s chunk carries
    its usage (``PROMPT_USAGE``: the input counts are final there), which the gateway accounts if
    the stream is cut before ``message_stop``. A ``tool_use`` block whose input stays empty (a
    tool without parameters streams one empty ``partial_json``) gets ``"{}"`` as its arguments at
    its ``content_block_stop``, as the complete answer has them. A ``thinking`` block's text
    streams as ``reasoning_content``; at its ``content_block_stop`` the whole block (its text and
    the signature its ``signature_delta`` brought), or a ``redacted_thinking`` block, comes once
    in ``delta.thinking_blocks``, as the complete answer's ``message.thinking_blocks`` has it
    (``anthropic_response.thinking_block``). Unknown events and block types
    are ignored, as Anthropic's versioning policy asks of clients, and so is what is streamed into
    them (a ``server_tool_use`` block's ``input_json_delta``: the input of a tool Anthropic runs,
    such as web search); tool input for a block never started is a ``BadUpstreamResponse``.
    """

    def __init__(self, *, created: int) -> None:
        self.created = created
        self.id = ""
        self.model = ""
        self.done = False
        self._usage: Json = {}
        self._tool_index: dict[int, int] = {}
        """Anthropic content-block index -> OpenAI tool call index."""
        self._started: set[int] = set()
        """The indexes of the content blocks started so far, of any type."""
        self._no_arguments: set[int] = set()
        """The ``tool_use`` blocks whose arguments have not come yet (see ``_block_stop``)."""
        self._thinking: dict[int, Json] = {}
        """The thinking blocks open so far, by index, as they have been streamed."""

    @property
    def usage(self) -> Usage | None:
        """The usage reported so far (input at ``message_start``, output at ``message_delta``)."""
        return read_usage(self._usage) if self._usage else None

    def feed(self, data: Json, *, event: str | None = None) -> list[Json]:
        """The chunks for one event's JSON ``data`` (``event`` is the SSE event name)."""
        kind = event_kind(data, event)
        if kind == "message_start":
            return self._message_start(data.get("message"))
        if kind == "content_block_start":
            return self._block_start(data.get("index"), data.get("content_block"))
        if kind == "content_block_delta":
            return self._block_delta(data.get("index"), data.get("delta"))
        if kind == "content_block_stop":
            return self._block_stop(data.get("index"))
        if kind == "message_delta":
            return self._message_delta(data)
        if kind == "message_stop":
            self.done = True
            usage = self.usage
            return [self._usage_chunk(usage)] if usage is not None else []
        if kind == "error":
            raise error_from_event(data)
        return []  # ping, and event types added after this was written

    def finish(self) -> None:
        """Call when the upstream stream ends; raises if it ended before ``message_stop``."""
        if not self.done:
            raise errors.BadUpstreamResponse("upstream stream ended before message_stop")

    def _chunk(self, delta: Json, *, finish: str | None = None) -> Json:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def _usage_chunk(self, usage: Usage) -> Json:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": [], "usage": usage.to_openai()}

    def _merge_usage(self, usage: Any) -> None:
        # message_delta's counts are cumulative: a later value replaces an earlier one.
        if isinstance(usage, dict):
            self._usage.update({k: v for k, v in usage.items() if v is not None})

    def _message_start(self, message: Any) -> list[Json]:
        if not isinstance(message, dict) or not isinstance(message.get("id"), str):
            raise errors.BadUpstreamResponse("upstream message_start lacks a message id")
        self.id = message["id"]
        model = message.get("model")
        self.model = model if isinstance(model, str) else ""
        self._merge_usage(message.get("usage"))
        chunk = self._chunk({"role": "assistant", "content": ""})
        usage = self.usage
        if usage is not None:  # the input counts, final already: kept for a cut stream
            chunk[PROMPT_USAGE] = usage.to_openai()
        return [chunk]

    def _block_start(self, index: Any, block: Any) -> list[Json]:
        if isinstance(index, int):
            self._started.add(index)
        if not isinstance(block, dict):
            return []
        kind = block.get("type")
        if isinstance(index, int) and (kept := thinking_block(block)) is not None:
            self._thinking[index] = kept
        if kind == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        if kind != "tool_use":
            return []
        if not isinstance(index, int) or not isinstance(block.get("id"), str) \
                or not isinstance(block.get("name"), str):
            raise errors.BadUpstreamResponse("upstream tool_use block lacks an index, id or name")
        position = self._tool_index.setdefault(index, len(self._tool_index))
        given = block.get("input")
        arguments = orjson.dumps(given).decode() if given else ""
        if not arguments:
            self._no_arguments.add(index)
        call = {"index": position, "id": block["id"], "type": "function",
                "function": {"name": block["name"], "arguments": arguments}}
        return [self._chunk({"tool_calls": [call]})]

    def _block_delta(self, index: Any, delta: Any) -> list[Json]:
        if not isinstance(delta, dict):
            return []
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        thinking = self._thinking.get(index) if isinstance(index, int) else None
        if kind == "signature_delta" and thinking is not None \
                and isinstance(delta.get("signature"), str):
            thinking["signature"] = thinking.get("signature", "") + delta["signature"]
            return []
        if kind == "thinking_delta" and delta.get("thinking"):
            if thinking is not None:
                thinking["thinking"] += delta["thinking"]
            return [self._chunk({"reasoning_content": delta["thinking"]})]
        if kind == "input_json_delta" and delta.get("partial_json"):
            position = self._tool_index.get(index) if isinstance(index, int) else None
            if position is None and index in self._started:
                return []  # the input of a server tool (server_tool_use: web search...)
            if position is None:
                raise errors.BadUpstreamResponse("upstream sent tool input for no tool_use block")
            self._no_arguments.discard(index)
            call = {"index": position, "function": {"arguments": delta["partial_json"]}}
            return [self._chunk({"tool_calls": [call]})]
        return []

    def _block_stop(self, index: Any) -> list[Json]:
        if isinstance(index, int) and index in self._thinking:
            return [self._chunk({"thinking_blocks": [self._thinking.pop(index)]})]
        # A tool without parameters streams only an empty ``partial_json``: its arguments are
        # "{}", as in the complete answer and as OpenAI sends them (clients json-parse them).
        if not isinstance(index, int) or index not in self._no_arguments:
            return []
        self._no_arguments.discard(index)
        call = {"index": self._tool_index[index], "function": {"arguments": "{}"}}
        return [self._chunk({"tool_calls": [call]})]

    def _message_delta(self, data: Json) -> list[Json]:
        self._merge_usage(data.get("usage"))
        delta = data.get("delta")
        stop_reason = delta.get("stop_reason") if isinstance(delta, dict) else None
        if stop_reason is None:
            return []
        return [self._chunk({}, finish=finish_reason(stop_reason))]
