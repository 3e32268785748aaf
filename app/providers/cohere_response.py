"""Cohere Chat API v2 answers -> OpenAI-shaped bodies, usage and gateway errors.

Pure functions, no I/O; the streaming counterpart is ``app.providers.cohere_stream``.

Usage is read from ``usage.billed_units`` (``input_tokens``, ``output_tokens``), falling back to
``usage.tokens`` only when an answer carries no billed units. Billed units are what Cohere
charges for: ``tokens`` also counts the tokens Cohere adds around the prompt (its own preamble and
special tokens), which Cohere does not bill ("How does Cohere's pricing work?",
https://docs.cohere.com/docs/how-does-cohere-pricing-work). The gateway prices usage with the
per-token prices of ``app/pricing.yaml``, so the billed counts make its cost match the invoice.
``usage.cached_tokens`` becomes ``cached_tokens``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app import errors
from app.providers.base import Json
from app.providers.http import default_error, read_error_body
from app.providers.stops import name_stop, stopped_by
from app.usage import Usage, part_count, reported_counts

FINISH_REASONS: dict[str, str] = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
    "TIMEOUT": "length",
}
"""Cohere's ``finish_reason`` -> OpenAI's. ``TIMEOUT`` (stopped at Cohere's time limit) is a cut
answer, like ``length``. ``ERROR`` (the generation failed upstream) has no OpenAI finish reason:
it is raised as a retryable ``UpstreamUnavailable`` (a 502 ``generation_failed``), so the call is
recorded as failed and, before the first byte, another target is tried."""


def failed_generation(reason: Any, error: Any) -> None:
    """Raise for Cohere's ``ERROR`` finish reason (``error``: Cohere's message, if any)."""
    if reason == "ERROR":
        detail = error if isinstance(error, str) and error else "no reason given"
        raise errors.UpstreamUnavailable(f"upstream generation failed: {detail[:500]}",
                                         status=502, code="generation_failed")


def finish_reason(value: Any) -> str:
    """OpenAI's ``finish_reason`` for a Cohere one (unknown ones read as stop)."""
    return FINISH_REASONS.get(value, "stop") if isinstance(value, str) else "stop"


def stop_sequence(value: Any, stops: Sequence[str]) -> str | None:
    """The stop sequence that ended an answer whose ``finish_reason`` is ``value``: Cohere's
    ``STOP_SEQUENCE`` says that one did, not which, so it is known only when the request had
    exactly one (``stops.stopped_by``)."""
    return stopped_by(stops) if value == "STOP_SEQUENCE" else None


def read_usage(usage: Any) -> Usage | None:
    """Cohere ``usage`` (or embed ``meta``) as a ``Usage``; None when it carries no counts.
    Billed units first, see the module docstring; each read by ``reported_counts`` (Cohere's
    schema types every count as a JSON number: 5.0 is 5), so units that cannot be read fall
    back to ``tokens``, and neither readable is None (estimated)."""
    if not isinstance(usage, dict):
        return None
    for key in ("billed_units", "tokens"):
        counts = reported_counts(usage.get(key), "input_tokens", "output_tokens")
        if counts is not None:
            return Usage(prompt_tokens=counts[0], completion_tokens=counts[1],
                         cached_tokens=part_count(usage, "cached_tokens", counts[0]))
    return None


def map_error(status: int, payload: Any, text: str) -> errors.GatewayError:
    """The gateway error for a Cohere error answer (``{"id": ..., "message": ...}``).

    Cohere's own statuses: 498 (a deny-listed token in the request) is the client's 400;
    499 (the request was cancelled upstream) is a retryable 503. Everything else goes through
    the shared status mapping (429 stays 429, 401/403 are the gateway's credentials: 502).
    """
    if status == 498:
        message, _, _ = read_error_body(payload, text[:500] or "invalid token")
        return errors.UpstreamRejected(message, status=400, code="invalid_token")
    if status == 499:
        message, _, _ = read_error_body(payload, text[:500] or "request cancelled")
        return errors.UpstreamUnavailable(message, status=503, code="request_cancelled")
    return default_error(status, payload, text)


def logprobs_entry(item: Any) -> Json | None:
    """One OpenAI ``logprobs.content`` entry for a Cohere ``LogprobItem`` (a text chunk, its
    token ids and their logprobs): the chunk as the token, its logprobs summed (the chunk's
    log-probability), no alternatives (Cohere gives none)."""
    if not isinstance(item, dict):
        return None
    text = item.get("text")
    values = item.get("logprobs")
    if not isinstance(text, str) or not isinstance(values, list):
        return None
    total = sum(v for v in values if isinstance(v, (int, float)))
    return {"token": text, "logprob": total, "bytes": list(text.encode()), "top_logprobs": []}


def _tool_calls(raw: Any) -> list[Json]:
    calls: list[Json] = []
    for call in raw if isinstance(raw, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(call.get("id"), str) \
                or not isinstance(function.get("name"), str):
            raise errors.BadUpstreamResponse("upstream tool call lacks an id or function name")
        arguments = function.get("arguments")
        calls.append({"id": call["id"], "type": "function",
                      "function": {"name": function["name"],
                                   "arguments": arguments if isinstance(arguments, str)
                                   else "{}"}})
    return calls


def to_message(message: Any) -> Json:
    """The OpenAI assistant ``message`` for a Cohere ``message``.

    Text parts are joined into ``content``; ``thinking`` parts go to ``reasoning_content``;
    ``tool_calls`` keep their ids; the ``tool_plan`` that comes with tool calls is the
    message's ``content`` (what the model says before calling). Citations have no OpenAI
    equivalent and are dropped.
    """
    if not isinstance(message, dict):
        raise errors.BadUpstreamResponse("upstream answer has no 'message' object")
    texts: list[str] = []
    thoughts: list[str] = []
    content = message.get("content")
    for part in content if isinstance(content, list) else ():
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "thinking" and isinstance(part.get("thinking"), str):
            thoughts.append(part["thinking"])
    tool_calls = _tool_calls(message.get("tool_calls"))
    plan = message.get("tool_plan")
    if not texts and tool_calls and isinstance(plan, str) and plan:
        texts.append(plan)
    out: Json = {"role": "assistant",
                 "content": "".join(texts) if texts or not tool_calls else None,
                 "refusal": None}
    if tool_calls:
        out["tool_calls"] = tool_calls
    if thoughts:
        out["reasoning_content"] = "".join(thoughts)
    return out


def to_chat_completion(body: Json, *, model: str, created: int,
                       stops: Sequence[str] = ()) -> tuple[Json, Usage | None]:
    """The OpenAI ``chat.completion`` body and usage for a Cohere v2 chat answer. Cohere's
    answer names no model, so ``model`` (the target's) is reported; ``stops``: the request's
    stop sequences (``stop_sequence``)."""
    answer_id = body.get("id")
    if not isinstance(answer_id, str) or "finish_reason" not in body:
        raise errors.BadUpstreamResponse("upstream answer is not a Cohere v2 chat response")
    failed_generation(body.get("finish_reason"), body.get("error"))
    usage = read_usage(body.get("usage"))
    logprobs = None
    if isinstance(body.get("logprobs"), list):
        entries = [logprobs_entry(item) for item in body["logprobs"]]
        logprobs = {"content": [e for e in entries if e is not None]}
    out: Json = {
        "id": answer_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": to_message(body.get("message")),
            "logprobs": logprobs,
            "finish_reason": finish_reason(body.get("finish_reason")),
        }],
    }
    name_stop(out["choices"][0], stop_sequence(body.get("finish_reason"), stops))
    if usage is not None:
        out["usage"] = usage.to_openai()
    return out, usage
