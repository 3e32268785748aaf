"""Anthropic Messages API answers -> OpenAI-shaped bodies, usage and gateway errors.

Pure functions, no I/O; the streaming counterpart is ``app.providers.anthropic_stream``.
"""

from __future__ import annotations

from typing import Any

import orjson

from app import errors
from app.providers.base import Json
from app.providers.http import default_error, read_error_body
from app.usage import MAX_REPORTED_TOKENS, Usage, part_count, reported_counts

FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# The HTTP status Anthropic documents for each error type, for errors that arrive as an
# ``event: error`` frame inside a 200 stream.
ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def finish_reason(stop_reason: Any) -> str:
    """OpenAI's ``finish_reason`` for an Anthropic ``stop_reason`` (unknown ones read as stop)."""
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def read_usage(usage: Any) -> Usage | None:
    """Anthropic ``usage`` as a ``Usage``; None when absent.

    Anthropic's ``input_tokens`` excludes cached input, so the OpenAI ``prompt_tokens`` is the
    sum of fresh, cache-read and cache-written input; reads are ``cached_tokens`` and writes
    ``cache_write_tokens`` (each priced differently), of which ``cache_creation``'s
    ``ephemeral_1h_input_tokens`` are ``cache_write_1h_tokens`` (priced above 5-minute
    writes). ``server_tool_use.web_search_requests`` are ``web_searches`` (billed per search).
    Read by ``reported_counts``: no ``input_tokens``, or a count that is not one, and the usage
    is None (estimated); the breakdowns (thinking, 1-hour writes, searches) are ``part_count``s.
    """
    counts = reported_counts(usage, "input_tokens", "output_tokens", "cache_read_input_tokens",
                             "cache_creation_input_tokens")
    if counts is None:
        return None
    fresh, output, read, write = counts
    return Usage(
        prompt_tokens=fresh + read + write,
        completion_tokens=output,
        cached_tokens=read,
        cache_write_tokens=write,
        reasoning_tokens=part_count(usage.get("output_tokens_details"), "thinking_tokens",
                                    output),
        cache_write_1h_tokens=part_count(usage.get("cache_creation"),
                                         "ephemeral_1h_input_tokens", write),
        web_searches=part_count(usage.get("server_tool_use"), "web_search_requests",
                                MAX_REPORTED_TOKENS),
    )


def _error_type(payload: Any) -> str | None:
    inner = payload.get("error") if isinstance(payload, dict) else None
    kind = inner.get("type") if isinstance(inner, dict) else None
    return kind if isinstance(kind, str) else None


def map_error(status: int, payload: Any, text: str) -> errors.GatewayError:
    """The gateway error for an Anthropic error answer (``{"type": "error", "error": {...}}``).

    529 ``overloaded_error`` is Anthropic's "try again later": a retryable 529, passed on as
    any upstream's 5xx is (``/v1/messages`` answers it as Anthropic does).
    """
    if status == 529 or _error_type(payload) == "overloaded_error":
        message, _, _ = read_error_body(payload, text[:500] or "Anthropic is overloaded")
        return errors.UpstreamUnavailable(message, status=529, code="overloaded_error")
    return default_error(status, payload, text)


def error_from_event(data: Json) -> errors.GatewayError:
    """The gateway error for an ``event: error`` frame received mid-stream."""
    status = ERROR_STATUS.get(_error_type(data) or "", 500)
    return map_error(status, data, "Anthropic stream failed")


def _tool_call(block: Json) -> Json:
    block_id, name, arguments = block.get("id"), block.get("name"), block.get("input", {})
    if not isinstance(block_id, str) or not isinstance(name, str):
        raise errors.BadUpstreamResponse("upstream tool_use block lacks an id or name")
    return {"id": block_id, "type": "function",
            "function": {"name": name, "arguments": orjson.dumps(arguments).decode()}}


def thinking_block(block: Any) -> Json | None:
    """A ``thinking`` block as ``{type, thinking, signature}``, a ``redacted_thinking`` one as
    ``{type, data}`` (what a client sends back in ``thinking_blocks``); None for other blocks."""
    if not isinstance(block, dict):
        return None
    if block.get("type") == "thinking" and isinstance(block.get("thinking"), str):
        signature = block.get("signature")
        return {"type": "thinking", "thinking": block["thinking"],
                "signature": signature if isinstance(signature, str) else ""}
    if block.get("type") == "redacted_thinking" and isinstance(block.get("data"), str):
        return {"type": "redacted_thinking", "data": block["data"]}
    return None


def to_message(content: Any) -> Json:
    """The OpenAI assistant ``message`` for Anthropic content blocks.

    Text blocks are joined into ``content``; ``tool_use`` blocks become ``tool_calls``;
    ``thinking`` text goes to ``reasoning_content`` (the field vLLM and DeepSeek use), and the
    ``thinking`` and ``redacted_thinking`` blocks themselves, signature and data as Anthropic
    sent them, to ``thinking_blocks`` (``thinking_block``; the field LiteLLM uses): a client
    sends them back on the assistant message, as Anthropic requires while tools are in use.
    Other block types (server tool uses and results) are not representable and are dropped.
    """
    if not isinstance(content, list):
        raise errors.BadUpstreamResponse("upstream message has no 'content' list")
    texts: list[str] = []
    thoughts: list[str] = []
    tool_calls: list[Json] = []
    thinking_blocks: list[Json] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use":
            tool_calls.append(_tool_call(block))
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            thoughts.append(block["thinking"])
        if (kept := thinking_block(block)) is not None:
            thinking_blocks.append(kept)
    message: Json = {"role": "assistant",
                     "content": "".join(texts) if texts or not tool_calls else None,
                     "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    if thinking_blocks:
        message["thinking_blocks"] = thinking_blocks
    return message


def to_chat_completion(body: Json, *, created: int) -> tuple[Json, Usage | None]:
    """The OpenAI ``chat.completion`` body and usage for an Anthropic ``message`` body."""
    message_id = body.get("id")
    if body.get("type") not in (None, "message") or not isinstance(message_id, str):
        raise errors.BadUpstreamResponse("upstream answer is not an Anthropic message")
    usage = read_usage(body.get("usage"))
    out: Json = {
        "id": message_id,
        "object": "chat.completion",
        "created": created,
        "model": body.get("model"),
        "choices": [{
            "index": 0,
            "message": to_message(body.get("content")),
            "logprobs": None,
            "finish_reason": finish_reason(body.get("stop_reason")),
        }],
    }
    if usage is not None:
        out["usage"] = usage.to_openai()
    return out, usage
