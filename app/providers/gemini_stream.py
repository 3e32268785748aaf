"""``streamGenerateContent?alt=sse`` chunks -> OpenAI ``chat.completion.chunk`` dicts.

Each SSE ``data:`` is a whole ``GenerateContentResponse`` holding the next piece of each
candidate: text, thought text, or complete function calls (Gemini does not split a call's
arguments); the candidate's ``finishReason`` comes with its last piece and ``usageMetadata``
(cumulative) with every chunk or the last. There is no end-of-stream event: the stream is
complete when every candidate seen has finished. An ``{"error": {...}}`` frame replaces the
rest. The translator is fed one parsed chunk at a time, so it is tested without a network.

The prompt's counts (``promptTokenCount``, ``cachedContentTokenCount``), final from the first
``usageMetadata`` that has them (Gemini's API sends them with every chunk; Vertex AI's early
chunks may carry ``trafficType`` alone), ride once on the next chunk out as ``PROMPT_USAGE``, so
a stream cut before its end is still accounted with the prompt the upstream reported.

Thought signatures: a function call's comes on its own part, so it rides on that tool call's
delta as ``extra_content``; one on any other part (Gemini 3 sends it on a final empty text
part) is a delta of its own, ``{"extra_content": {"google": {"thought_signature": ...}}}``, the
message-level field where Google's OpenAI-compatible endpoint puts it.
"""

from __future__ import annotations

from typing import Any

from app import errors
from app.providers.base import PROMPT_USAGE, Json
from app.providers.gemini_response import (
    carried_signature,
    check_prompt,
    completion_id,
    error_from_frame,
    finish_reason,
    read_usage,
    split_parts,
)
from app.providers.http import ErrorMapper
from app.usage import Usage


class StreamTranslator:
    """Turns one Gemini SSE stream into OpenAI chunks.

    ``feed`` returns the chunks one upstream chunk produces and raises the mapped gateway error
    for an error frame (or a blocked prompt). ``finish``, called when the upstream stream ends,
    returns the final usage chunk (``choices: []``; none when the upstream reported no usage, so
    the gateway estimates) and raises ``BadUpstreamResponse`` when a candidate never finished.
    """

    def __init__(self, *, model: str, created: int, error_mapper: ErrorMapper) -> None:
        self.model = model
        self.created = created
        self.id = ""
        self._mapper = error_mapper
        self._usage: Json | None = None
        self._prompt_known = False
        self._prompt: Json | None = None
        """The prompt's usage (``PROMPT_USAGE``) while it waits for a chunk to ride on."""
        self._started: set[int] = set()
        self._finished: set[int] = set()
        self._tool_calls: dict[int, int] = {}
        """Candidate index -> tool calls emitted so far (the next call's OpenAI index)."""

    @property
    def usage(self) -> Usage | None:
        return read_usage(self._usage)

    def feed(self, data: Json) -> list[Json]:
        if "error" in data:
            raise error_from_frame(data, self._mapper)
        if not self.id:
            self.id = completion_id(data)
            version = data.get("modelVersion")
            if isinstance(version, str) and version:
                self.model = version
        check_prompt(data)
        metadata = data.get("usageMetadata")
        if isinstance(metadata, dict):
            self._usage = metadata
            if not self._prompt_known and isinstance(metadata.get("promptTokenCount"), int):
                self._prompt_known = True
                self._prompt = _prompt_usage(metadata)
        chunks: list[Json] = []
        candidates = data.get("candidates")
        for position, candidate in enumerate(candidates if isinstance(candidates, list) else ()):
            if isinstance(candidate, dict):
                chunks.extend(self._candidate(position, candidate))
        if self._prompt is not None and chunks:
            chunks[0][PROMPT_USAGE] = self._prompt
            self._prompt = None
        return chunks

    def finish(self) -> list[Json]:
        if not self._started or self._started - self._finished:
            raise errors.BadUpstreamResponse("upstream stream ended before its finishReason")
        usage = self.usage
        if usage is None:
            return []
        return [{"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                 "model": self.model, "choices": [], "usage": usage.to_openai()}]

    def _chunk(self, index: int, delta: Json, finish: str | None = None) -> Json:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model,
                "choices": [{"index": index, "delta": delta, "logprobs": None,
                             "finish_reason": finish}]}

    def _candidate(self, position: int, candidate: Json) -> list[Json]:
        given = candidate.get("index")
        index = given if isinstance(given, int) else position
        chunks: list[Json] = []
        if index not in self._started:
            self._started.add(index)
            chunks.append(self._chunk(index, {"role": "assistant", "content": ""}))
        content: Any = candidate.get("content")
        texts, thoughts, calls, signature = split_parts(
            content.get("parts") if isinstance(content, dict) else None)
        if thoughts:
            chunks.append(self._chunk(index, {"reasoning_content": "".join(thoughts)}))
        if texts and "".join(texts):
            chunks.append(self._chunk(index, {"content": "".join(texts)}))
        if signature is not None:
            chunks.append(self._chunk(index, {"extra_content": carried_signature(signature)}))
        if calls:
            first = self._tool_calls.get(index, 0)
            self._tool_calls[index] = first + len(calls)
            chunks.append(self._chunk(index, {"tool_calls": [
                {"index": first + i, **call} for i, call in enumerate(calls)]}))
        reason = candidate.get("finishReason")
        if isinstance(reason, str) and reason:
            self._finished.add(index)
            chunks.append(self._chunk(index, {}, finish_reason(
                reason, has_tool_calls=self._tool_calls.get(index, 0) > 0,
                detail=candidate.get("finishMessage"))))
        return chunks


def _prompt_usage(metadata: Json) -> Json | None:
    """The prompt's part of ``usageMetadata`` (its input and cache-read counts) as an OpenAI
    ``usage`` object; None when they are unreadable."""
    usage = read_usage(metadata)
    if usage is None:
        return None
    return Usage(prompt_tokens=usage.prompt_tokens, cached_tokens=usage.cached_tokens).to_openai()
