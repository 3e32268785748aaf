"""Bedrock Converse answers and ConverseStream events -> OpenAI-shaped bodies, chunks and usage.

Pure, no I/O. Converse's ``usage.inputTokens`` counts only the input read fresh (as Anthropic's
``input_tokens`` does), so ``prompt_tokens`` is fresh + ``cacheReadInputTokens`` +
``cacheWriteInputTokens``; reads are ``cached_tokens``, writes ``cache_write_tokens``.
Reasoning (``reasoningContent`` blocks) is billed inside ``outputTokens``, which is
``completion_tokens``; Converse's usage has no count of its own for it, so ``reasoning_tokens``
stays 0 and the OpenAI usage has no ``completion_tokens_details`` (an estimate from the visible
text would undercount a summarized reasoning).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import orjson

from app import errors
from app.providers.base import Json
from app.providers.stops import name_stop, stopped_by
from app.usage import Usage, reported_counts

FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
    "model_context_window_exceeded": "length", "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter", "content_filtered": "content_filter",
}
MALFORMED = frozenset({"malformed_model_output", "malformed_tool_use"})


def new_id() -> str:
    """Converse answers carry no id (only the ``x-amzn-RequestId`` header): one of our own."""
    return f"chatcmpl-{uuid.uuid4().hex}"


def finish_reason(stop_reason: Any) -> str:
    """OpenAI's ``finish_reason`` for a Converse ``stopReason``; a malformed output is a 502."""
    if stop_reason in MALFORMED:
        raise errors.BadUpstreamResponse(f"the model's output was malformed ({stop_reason})",
                                         code=str(stop_reason))
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def stop_sequence(stop_reason: Any, fields: Any, stops: Sequence[str]) -> str | None:
    """The stop sequence that ended an answer Converse stopped with ``stop_reason``: for
    ``stop_sequence``, the one the model's response names in ``fields``
    (``additionalModelResponseFields``: Claude's ``stop_sequence``, asked for by
    ``bedrock_converse.STOP_SEQUENCE_PATH``), else the request's only one (``stopped_by``:
    Converse's ``stopReason`` does not say which); else None."""
    if stop_reason != "stop_sequence":
        return None
    named = fields.get("stop_sequence") if isinstance(fields, dict) else None
    return named if isinstance(named, str) and named else stopped_by(stops)


def read_usage(usage: Any) -> Usage | None:
    """Converse ``usage`` as a ``Usage`` (see the module docstring); None when absent, without
    ``inputTokens`` or with a count that is not one (``reported_counts``: then estimated)."""
    counts = reported_counts(usage, "inputTokens", "outputTokens", "cacheReadInputTokens",
                             "cacheWriteInputTokens")
    if counts is None:
        return None
    fresh, output, read, write = counts
    return Usage(prompt_tokens=fresh + read + write, completion_tokens=output,
                 cached_tokens=read, cache_write_tokens=write)


def to_message(content: Any) -> Json:
    """The OpenAI assistant ``message`` for Converse content blocks: text joined, ``toolUse``
    as ``tool_calls``, reasoning text as ``reasoning_content``; other blocks are dropped."""
    if not isinstance(content, list):
        raise errors.BadUpstreamResponse("Bedrock answer has no output.message.content list")
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[Json] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif isinstance(block.get("toolUse"), dict):
            use = block["toolUse"]
            if not isinstance(use.get("toolUseId"), str) or not isinstance(use.get("name"), str):
                raise errors.BadUpstreamResponse("Bedrock toolUse block lacks an id or name")
            calls.append({"id": use["toolUseId"], "type": "function",
                          "function": {"name": use["name"],
                                       "arguments": orjson.dumps(use.get("input", {})).decode()}})
        elif isinstance(block.get("reasoningContent"), dict):
            text = (block["reasoningContent"].get("reasoningText") or {}).get("text")
            if isinstance(text, str):
                thoughts.append(text)
    message: Json = {"role": "assistant",
                     "content": "".join(texts) if texts or not calls else None, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    return message


def to_chat_completion(body: Any, *, model: str, created: int, stops: Sequence[str] = ()
                       ) -> tuple[Json, Usage | None]:
    """The OpenAI ``chat.completion`` and usage for a Converse answer; ``stops``: the request's
    stop sequences (``stop_sequence``, named in the choice's ``stop_reason``)."""
    output = body.get("output") if isinstance(body, dict) else None
    message = output.get("message") if isinstance(output, dict) else None
    if not isinstance(message, dict):
        raise errors.BadUpstreamResponse("Bedrock answer has no output.message")
    usage = read_usage(body.get("usage"))
    out: Json = {"id": new_id(), "object": "chat.completion", "created": created,
                 "model": model,
                 "choices": [name_stop(
                     {"index": 0, "message": to_message(message.get("content")),
                      "logprobs": None, "finish_reason": finish_reason(body.get("stopReason"))},
                     stop_sequence(body.get("stopReason"),
                                   body.get("additionalModelResponseFields"), stops))]}
    if usage is not None:
        out["usage"] = usage.to_openai()
    return out, usage


OPENING_EVENTS = frozenset({"messageStart", "contentBlockStart"})
"""What ConverseStream sends before its model's first token (``messageStart`` at once): held
by ``Bedrock.stream_chat`` (``base.OpeningHold``) until the next event."""


class StreamTranslator:
    """ConverseStream events -> OpenAI chunks. ``feed(event_type, payload)`` returns the chunks
    one event produces; after ``metadata`` (which follows ``messageStop``) the usage chunk is out
    and ``done`` is true; ``finish`` raises if the stream ended before ``messageStop``.
    ``messageStop``'s finish chunk names a stop sequence as an answer's choice does
    (``stop_sequence``). Unknown events are ignored."""

    def __init__(self, *, model: str, created: int, stops: Sequence[str] = ()) -> None:
        """``stops``: the request's stop sequences."""
        self.id = new_id()
        self.stops = stops
        self.model = model
        self.created = created
        self.done = False
        self.stopped = False
        self._tools: dict[int, int] = {}
        """Converse content-block index -> OpenAI tool call index."""

    def _chunk(self, delta: Json, *, finish: str | None = None) -> Json:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish}]}

    def feed(self, event: str, data: Json) -> list[Json]:
        if event == "messageStart":
            return [self._chunk({"role": "assistant", "content": ""})]
        if event == "contentBlockStart":
            return self._start(data.get("contentBlockIndex"), data.get("start"))
        if event == "contentBlockDelta":
            return self._delta(data.get("contentBlockIndex"), data.get("delta"))
        if event == "messageStop":
            self.stopped = True
            chunk = self._chunk({}, finish=finish_reason(data.get("stopReason")))
            name_stop(chunk["choices"][0], stop_sequence(
                data.get("stopReason"), data.get("additionalModelResponseFields"), self.stops))
            return [chunk]
        if event == "metadata":
            self.done = True
            usage = read_usage(data.get("usage"))
            if usage is None:
                return []
            return [{"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                     "model": self.model, "choices": [], "usage": usage.to_openai()}]
        return []

    def finish(self) -> None:
        """Call when the stream ends; raises when it ended before ``messageStop``."""
        if not self.stopped:
            raise errors.BadUpstreamResponse("Bedrock stream ended before messageStop")

    def _start(self, index: Any, start: Any) -> list[Json]:
        use = start.get("toolUse") if isinstance(start, dict) else None
        if not isinstance(use, dict):
            return []
        if not isinstance(index, int) or not isinstance(use.get("toolUseId"), str) \
                or not isinstance(use.get("name"), str):
            raise errors.BadUpstreamResponse("Bedrock toolUse start lacks an index, id or name")
        position = self._tools.setdefault(index, len(self._tools))
        return [self._chunk({"tool_calls": [{
            "index": position, "id": use["toolUseId"], "type": "function",
            "function": {"name": use["name"], "arguments": ""}}]})]

    def _delta(self, index: Any, delta: Any) -> list[Json]:
        if not isinstance(delta, dict):
            return []
        if isinstance(delta.get("text"), str) and delta["text"]:
            return [self._chunk({"content": delta["text"]})]
        use = delta.get("toolUse")
        if isinstance(use, dict) and isinstance(use.get("input"), str) and use["input"]:
            position = self._tools.get(index) if isinstance(index, int) else None
            if position is None:
                raise errors.BadUpstreamResponse("Bedrock sent tool input for no toolUse block")
            return [self._chunk({"tool_calls": [{"index": position,
                                                 "function": {"arguments": use["input"]}}]})]
        reasoning = delta.get("reasoningContent")
        if isinstance(reasoning, dict) and isinstance(reasoning.get("text"), str) \
                and reasoning["text"]:
            return [self._chunk({"reasoning_content": reasoning["text"]})]
        return []
