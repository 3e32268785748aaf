"""Replicate predictions, stream events and errors -> OpenAI-shaped bodies and gateway errors.

Pure functions and a small stream state machine, no I/O.

- A language model's ``output`` is a list of string tokens (or, for some models, one string):
  joined, it is the message ``content``.
- Usage comes from the prediction's ``metrics``: ``input_token_count`` -> ``prompt_tokens``,
  ``output_token_count`` -> ``completion_tokens``; no counts, no usage (the gateway estimates).
- Replicate reports no finish reason: ``length`` when the output token count reached the token
  limit sent, else ``stop``.
- A ``failed`` prediction (its ``error``) and a ``canceled`` one are retryable upstream
  failures (502, codes ``prediction_failed`` / ``prediction_canceled``): on Replicate they are
  mostly the model's runtime failing (out of memory, a crashed worker), which another target
  may not share.
- Error answers are RFC 7807 problem details (``{"title", "detail", "status"}``): the detail
  (else the title) is the message; 422 (input validation) becomes a 400 ``invalid_request_error``
  whose ``param`` is ``input`` and whose message carries Replicate's detail (which names the
  failing field); 429 keeps its ``Retry-After``; 401/403 say the gateway's token was refused
  (the token itself is scrubbed by ``Upstream``).
"""

from __future__ import annotations

from typing import Any

import orjson

from app import errors
from app.providers.base import Json
from app.usage import Usage, reported_counts

TERMINAL = frozenset({"succeeded", "failed", "canceled"})
RUNNING = frozenset({"starting", "processing"})


def problem_message(payload: Any, fallback: str) -> str:
    """The message of a problem+json body (``detail``, else ``title``)."""
    if isinstance(payload, dict):
        for key in ("detail", "title"):
            value = payload.get(key)
            if isinstance(value, str) and value:
                return value
    return fallback


def map_error(status: int, payload: Any, text: str) -> errors.GatewayError:
    """The gateway error for a Replicate error answer (problem+json)."""
    message = problem_message(payload, text[:500] or f"HTTP {status}")
    if status == 422:
        return errors.UpstreamRejected(f"Replicate rejected the prediction input: {message}",
                                       status=400, code="invalid_input", param="input")
    return errors.from_upstream_status(status, f"Replicate: {message}")


def output_text(output: Any) -> str:
    """A language model's output as text (a list of tokens joined, or a single string)."""
    if output is None:
        return ""
    if isinstance(output, str):
        return output
    if isinstance(output, list) and all(isinstance(piece, str) for piece in output):
        return "".join(output)
    raise errors.BadUpstreamResponse("Replicate prediction output is not text (a string or a "
                                     "list of strings): is this a language model?")


def read_usage(prediction: Json) -> Usage | None:
    """Token counts from the prediction's ``metrics``; None when it has no
    ``input_token_count`` or a count that is not one (``reported_counts``: then estimated)."""
    counts = reported_counts(prediction.get("metrics"), "input_token_count",
                             "output_token_count")
    if counts is None:
        return None
    return Usage(prompt_tokens=counts[0], completion_tokens=counts[1])


def finish_reason(usage: Usage | None, limit: int | None) -> str:
    """``length`` when the completion reached the token limit sent, else ``stop``."""
    if usage is not None and limit is not None and usage.completion_tokens >= limit:
        return "length"
    return "stop"


def prediction_error(prediction: Json) -> errors.GatewayError | None:
    """The error a finished prediction stands for (None when it succeeded)."""
    status = prediction.get("status")
    ident = prediction.get("id", "?")
    if status == "failed":
        detail = prediction.get("error")
        reason = detail if isinstance(detail, str) and detail else "no error given"
        return errors.UpstreamUnavailable(f"Replicate prediction {ident} failed: {reason}",
                                          status=502, code="prediction_failed")
    if status == "canceled":
        return errors.UpstreamUnavailable(f"Replicate prediction {ident} was canceled",
                                          status=502, code="prediction_canceled")
    if status != "succeeded":
        return errors.BadUpstreamResponse(f"Replicate prediction {ident} has status {status!r}")
    return None


def to_chat_completion(prediction: Json, *, created: int, limit: int | None
                       ) -> tuple[Json, Usage | None]:
    """The ``chat.completion`` body and usage of a finished prediction (raises its error)."""
    error = prediction_error(prediction)
    if error is not None:
        raise error
    usage = read_usage(prediction)
    model = prediction.get("model")
    body: Json = {
        "id": f"chatcmpl-{prediction.get('id', '')}",
        "object": "chat.completion",
        "created": created,
        "model": model if isinstance(model, str) else "",
        "choices": [{"index": 0, "logprobs": None,
                     "finish_reason": finish_reason(usage, limit),
                     "message": {"role": "assistant",
                                 "content": output_text(prediction.get("output"))}}],
    }
    if usage is not None:
        body["usage"] = usage.to_openai()
    return body, usage


def stream_error(data: str) -> errors.GatewayError:
    """The error an ``error`` stream event reports (its JSON ``detail``, or its raw text)."""
    try:
        payload: Any = orjson.loads(data)
    except orjson.JSONDecodeError:
        payload = None
    message = problem_message(payload, data[:500] or "no detail given")
    return errors.UpstreamUnavailable(f"Replicate prediction failed: {message}", status=502,
                                      code="prediction_failed")


class StreamTranslator:
    """Replicate stream events -> ``chat.completion.chunk`` dicts.

    ``output`` events carry one piece of text each (the raw ``data``); ``error`` raises its
    error; ``done`` ends the stream (``{"reason": "canceled"}`` or ``"error"`` raise). After a
    clean ``done``, ``finish(usage)`` gives the finishing chunk and the usage chunk (usage comes
    from the prediction fetched after the stream: the stream itself carries no token counts).
    """

    def __init__(self, *, prediction_id: str, model: str, created: int) -> None:
        self.id = f"chatcmpl-{prediction_id}"
        self.model = model
        self.created = created
        self.done = False
        self._started = False

    def _chunk(self, delta: Json, *, finish: str | None = None) -> Json:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish}]}

    def first(self) -> Json:
        """The opening chunk (the assistant role), sent once the prediction exists."""
        self._started = True
        return self._chunk({"role": "assistant", "content": ""})

    def feed(self, event: str | None, data: str) -> list[Json]:
        """The chunks for one event (``event`` is the SSE event name)."""
        if event == "output":
            return [self._chunk({"content": data})] if data else []
        if event == "error":
            raise stream_error(data)
        if event == "done":
            self.done = True
            reason = _done_reason(data)
            if reason == "canceled":
                raise errors.UpstreamUnavailable("Replicate prediction was canceled",
                                                 status=502, code="prediction_canceled")
            if reason:
                raise errors.UpstreamUnavailable(f"Replicate prediction ended: {reason}",
                                                 status=502, code="prediction_failed")
        return []  # logs, and event types added after this was written

    def finish(self, usage: Usage | None, limit: int | None) -> list[Json]:
        """The finishing chunk, then the usage chunk when usage is known."""
        if not self.done:
            raise errors.BadUpstreamResponse("Replicate stream ended before its done event")
        chunks = [self._chunk({}, finish=finish_reason(usage, limit))]
        if usage is not None:
            chunks.append({"id": self.id, "object": "chat.completion.chunk",
                           "created": self.created, "model": self.model, "choices": [],
                           "usage": usage.to_openai()})
        return chunks


def _done_reason(data: str) -> str | None:
    try:
        payload: Any = orjson.loads(data) if data else {}
    except orjson.JSONDecodeError:
        return None
    reason = payload.get("reason") if isinstance(payload, dict) else None
    return reason if isinstance(reason, str) and reason else None
