"""``GenerateContentResponse`` -> OpenAI-shaped bodies and usage; Google errors -> gateway
errors (Gemini API and Vertex AI share both).

Pure functions, no I/O; the streaming counterpart is ``app.providers.gemini_stream``.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson

from app import errors
from app.providers.base import Json
from app.providers.http import ErrorMapper
from app.usage import MAX_REPORTED_TOKENS, Usage, part_count, reported_counts

FINISH_REASONS: dict[str, str] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "ESCALATION": "content_filter",
    "MODEL_ARMOR": "content_filter",
}
"""Gemini ``finishReason`` -> OpenAI ``finish_reason``; any other reason reads as ``stop``
(a candidate with function calls is ``tool_calls`` whatever its reason), except the
``FAILED_REASONS``."""
FAILED_REASONS = frozenset({"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL",
                            "TOO_MANY_TOOL_CALLS", "MISSING_THOUGHT_SIGNATURE",
                            "MALFORMED_RESPONSE"})
"""``finishReason`` values (google-genai's ``FinishReason``) that end a candidate with no usable
answer: a broken or unexpected function call, a tool loop cut off, a malformed response. The
answer is a 502 ``BadUpstreamResponse`` (retried, or the next target), as a Bedrock
``malformed_tool_use`` is, never a finished reply."""

STATUS_CODES: dict[str, int] = {
    "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "ABORTED": 409,
    "ALREADY_EXISTS": 409, "RESOURCE_EXHAUSTED": 429, "CANCELLED": 499, "INTERNAL": 500,
    "UNKNOWN": 500, "DATA_LOSS": 500, "UNIMPLEMENTED": 501, "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
"""google.rpc.Code names -> the HTTP status Google documents for each, for error frames that
arrive inside a 200 stream without a numeric ``code``."""

_KEY_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED"})
_DELAY = re.compile(r"^(?P<s>\d+(?:\.\d+)?)s$")


def finish_reason(reason: Any, *, has_tool_calls: bool = False, detail: Any = None) -> str:
    """OpenAI's ``finish_reason`` for a candidate's; a ``FAILED_REASONS`` one raises
    ``BadUpstreamResponse`` naming it (and the candidate's ``finishMessage``, ``detail``)."""
    if reason in FAILED_REASONS:
        said = f": {detail[:300]}" if isinstance(detail, str) and detail else ""
        raise errors.BadUpstreamResponse(f"the model's answer failed ({reason}){said}")
    if has_tool_calls:
        return "tool_calls"
    return FINISH_REASONS.get(reason, "stop") if isinstance(reason, str) else "stop"


def read_usage(metadata: Any) -> Usage | None:
    """``usageMetadata`` as a ``Usage``; None when absent.

    Prompt: ``promptTokenCount`` plus ``toolUsePromptTokenCount`` (both billed as input;
    ``cachedContentTokenCount`` is the cached part of them). Completion:
    ``candidatesTokenCount`` plus ``thoughtsTokenCount`` (thinking is billed as output and
    Google counts it apart), the thoughts also as ``reasoning_tokens``. Audio: the ``AUDIO``
    entry of ``promptTokensDetails`` less that of ``cacheTokensDetails`` (audio input not read
    from the cache, which some models price above text). Read by ``reported_counts``: no
    ``promptTokenCount``, or a count that is not one, and the usage is None (estimated); the
    cached and audio tokens are ``part_count``s of the prompt.
    """
    counts = reported_counts(metadata, "promptTokenCount", "toolUsePromptTokenCount",
                             "candidatesTokenCount", "thoughtsTokenCount")
    if counts is None:
        return None
    prompt, tool_use, candidates, thoughts = counts
    prompt += tool_use
    audio = _audio_tokens(metadata.get("promptTokensDetails")) - _audio_tokens(
        metadata.get("cacheTokensDetails"))
    return Usage(prompt_tokens=prompt, completion_tokens=candidates + thoughts,
                 cached_tokens=part_count(metadata, "cachedContentTokenCount", prompt),
                 reasoning_tokens=thoughts, audio_tokens=min(max(0, audio), prompt))


def _audio_tokens(details: Any) -> int:
    """The ``AUDIO`` tokens of a ``ModalityTokenCount`` list (0 when it has none; an entry
    whose ``tokenCount`` is not a ``token_count`` counts 0)."""
    if not isinstance(details, list):
        return 0
    return sum(part_count(entry, "tokenCount", MAX_REPORTED_TOKENS) for entry in details
               if isinstance(entry, dict) and entry.get("modality") == "AUDIO")


_MINTED = re.compile(r"call_[0-9a-f]{24}")


def call_id() -> str:
    """An OpenAI-style tool call id for a function call Gemini gave no ``id`` (Gemini 2.x)."""
    return "call_" + secrets.token_hex(12)


def minted(tool_call_id: str) -> bool:
    """Whether ``tool_call_id`` is one ``call_id`` made up, rather than Gemini's own."""
    return _MINTED.fullmatch(tool_call_id) is not None


def carried_signature(signature: str) -> Json:
    """The ``extra_content`` that carries a Gemini thought signature on an OpenAI tool call or
    message: where Google's own OpenAI-compatible endpoint puts it, so clients written for that
    endpoint send it back unchanged (``gemini_request`` reads it there)."""
    return {"google": {"thought_signature": signature}}


def _signature(part: Json) -> str | None:
    value = part.get("thoughtSignature")
    return value if isinstance(value, str) and value else None


def tool_call(function_call: Any, *, signature: str | None = None) -> Json:
    """The OpenAI tool call for one ``functionCall`` part (its ``id`` kept when it has one; the
    part's thought signature, if any, as ``extra_content``)."""
    name = function_call.get("name") if isinstance(function_call, dict) else None
    if not isinstance(name, str):
        raise errors.BadUpstreamResponse("upstream functionCall part lacks a name")
    given = function_call.get("id")
    args = function_call.get("args")
    arguments = orjson.dumps(args if args is not None else {}).decode()
    call: Json = {"id": given if isinstance(given, str) and given else call_id(),
                  "type": "function", "function": {"name": name, "arguments": arguments}}
    if signature is not None:
        call["extra_content"] = carried_signature(signature)
    return call


class Parts(NamedTuple):
    """A candidate's ``content.parts`` sorted for an OpenAI message. Other parts (inline data,
    code execution) are not representable in a chat message and are dropped."""

    texts: list[str]
    thoughts: list[str]
    calls: list[Json]
    """Tool calls, each with its part's thought signature."""
    signature: str | None
    """The last thought signature on a part that is not a function call (Gemini 3 puts one on
    the last part of an answer without calls; streams send it on a final empty text part)."""


def split_parts(parts: Any) -> Parts:
    """The texts, thoughts, tool calls and text signature of a candidate's parts."""
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[Json] = []
    signature = None
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, dict):
            continue
        if "functionCall" in part:
            calls.append(tool_call(part["functionCall"], signature=_signature(part)))
            continue
        if isinstance(part.get("text"), str):
            (thoughts if part.get("thought") is True else texts).append(part["text"])
        signature = _signature(part) or signature
    return Parts(texts, thoughts, calls, signature)


def check_prompt(body: Json) -> None:
    """Raise the 400 for a prompt Gemini blocked (``promptFeedback.blockReason``)."""
    feedback = body.get("promptFeedback")
    reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
    if isinstance(reason, str) and reason and not body.get("candidates"):
        message = feedback.get("blockReasonMessage") if isinstance(feedback, dict) else None
        detail = f": {message}" if isinstance(message, str) and message else ""
        raise errors.UpstreamRejected(f"Gemini blocked the prompt ({reason}){detail}",
                                      status=400, code="prompt_blocked", param="messages")


def _choice(position: int, candidate: Any) -> Json:
    if not isinstance(candidate, dict):
        raise errors.BadUpstreamResponse("upstream candidate is not an object")
    content = candidate.get("content")
    texts, thoughts, calls, signature = split_parts(
        content.get("parts") if isinstance(content, dict) else None)
    message: Json = {"role": "assistant",
                     "content": "".join(texts) if texts or not calls else None,
                     "refusal": None}
    if calls:
        message["tool_calls"] = calls
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    if signature is not None:
        message["extra_content"] = carried_signature(signature)
    index = candidate.get("index")
    return {"index": index if isinstance(index, int) else position, "message": message,
            "logprobs": None,
            "finish_reason": finish_reason(candidate.get("finishReason"),
                                           has_tool_calls=bool(calls),
                                           detail=candidate.get("finishMessage"))}


def completion_id(body: Json) -> str:
    given = body.get("responseId")
    return f"chatcmpl-{given}" if isinstance(given, str) and given \
        else "chatcmpl-" + secrets.token_hex(12)


def to_chat_completion(body: Json, *, model: str, created: int) -> tuple[Json, Usage | None]:
    """The OpenAI ``chat.completion`` body and usage for a ``GenerateContentResponse``
    (``model``: the target's, used when the answer names no ``modelVersion``)."""
    check_prompt(body)
    candidates = body.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        raise errors.BadUpstreamResponse("upstream answer has no candidates")
    usage = read_usage(body.get("usageMetadata"))
    version = body.get("modelVersion")
    out: Json = {
        "id": completion_id(body),
        "object": "chat.completion",
        "created": created,
        "model": version if isinstance(version, str) and version else model,
        "choices": [_choice(i, c) for i, c in enumerate(candidates)],
    }
    if usage is not None:
        out["usage"] = usage.to_openai()
    return out, usage


def _retry_delay(details: Any) -> float | None:
    """Seconds from a ``google.rpc.RetryInfo`` detail (``"retryDelay": "37s"``)."""
    for detail in details if isinstance(details, list) else ():
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        match = _DELAY.match(delay) if isinstance(delay, str) else None
        if match is not None:
            seconds = float(match["s"])  # inf for 400 digits: dropped, as http.retry_after does
            return seconds if math.isfinite(seconds) else None
    return None


def _reasons(details: Any) -> set[str]:
    return {d["reason"] for d in (details if isinstance(details, list) else ())
            if isinstance(d, dict) and isinstance(d.get("reason"), str)}


def error_mapper(describe: str) -> ErrorMapper:
    """The mapper for Google's ``{"error": {"code", "message", "status", "details"}}`` answers;
    ``describe`` names the provider in credential errors.

    RESOURCE_EXHAUSTED stays a 429 (its ``RetryInfo.retryDelay`` read as the retry-after when no
    header gives one); a refused credential (401, 403, or Gemini's 400 with reason
    ``API_KEY_INVALID``) is a 502 naming the provider; other statuses map as everywhere.
    """

    def map_error(status: int, payload: Any, text: str) -> errors.GatewayError:
        inner = payload.get("error") if isinstance(payload, dict) else None
        inner = inner if isinstance(inner, dict) else {}
        message = inner.get("message")
        message = message if isinstance(message, str) and message else \
            (text[:500] or f"HTTP {status}")
        code = inner.get("status") if isinstance(inner.get("status"), str) else None
        details = inner.get("details")
        if status in (401, 403) or _reasons(details) & _KEY_REASONS:
            return errors.UpstreamAuthFailed(
                f"{describe} refused the gateway's credentials ({code or status}): {message}",
                code=code)
        error = errors.from_upstream_status(status, message, code=code)
        if isinstance(error, errors.UpstreamRateLimited):
            error.retry_after_s = _retry_delay(details)
        return error

    return map_error


def error_from_frame(data: Json, mapper: Callable[[int, Any, str], errors.GatewayError]
                     ) -> errors.GatewayError:
    """The gateway error for an ``{"error": {...}}`` frame received mid-stream."""
    inner = data.get("error")
    inner = inner if isinstance(inner, dict) else {}
    code, name = inner.get("code"), inner.get("status")
    status = code if isinstance(code, int) and code >= 400 else \
        STATUS_CODES.get(name if isinstance(name, str) else "", 500)
    return mapper(status, data, "Gemini stream failed")
