"""AI21 chat completion answers, stream chunks and error bodies -> the gateway's shapes.

Pure functions and a small state machine, no I/O.

- An answer (``{"id", "choices", "usage", "meta"}``) lacks OpenAI's ``object``, ``created`` and
  ``model``: they are added (``model``: the target's model name). ``meta`` is dropped.
- A stream chunk (``{"id", "choices": [{"index", "delta", "finish_reason"}], "usage"}``)
  carries ``usage`` on the last chunk only, beside that chunk's choices: the translator passes
  the choices on without it and then yields a chunk of its own with ``choices: []`` and the
  usage, as OpenAI's ``include_usage`` stream does (and as the gateway's accounting expects).
  The role chunk (``{"role": "assistant"}``) gains ``"content": ""``, as OpenAI's carries;
  a tool call's first delta (``{"id", "index", "type", "function": {"name"}}``) gains
  ``"arguments": ""``.
- Errors: FastAPI's ``{"detail": "..."}`` and, for a 422, ``{"detail": [{"loc", "msg",
  "type"}, ...]}``, read into the gateway's error tree (``param`` from the first ``loc``, less
  its leading ``body``).
"""

from __future__ import annotations

from typing import Any

from app import errors
from app.providers.base import Json
from app.providers.http import default_error
from app.usage import Usage

FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter"})
"""Finish reasons passed on as they are; any other non-null one is reported as ``stop``."""


def finish_reason(value: Any) -> str | None:
    if value is None:
        return None
    return value if value in FINISH_REASONS else "stop"


def _loc_param(loc: Any) -> str | None:
    """``["body", "messages", 0, "content"]`` -> ``messages[0].content``."""
    if not isinstance(loc, list):
        return None
    parts = loc[1:] if loc and loc[0] == "body" else loc
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or None


def read_detail(payload: Any) -> tuple[str, str | None, str | None] | None:
    """(message, code, param) from a FastAPI-style ``detail`` body; None for another shape."""
    detail = payload.get("detail") if isinstance(payload, dict) else None
    if isinstance(detail, str) and detail:
        return detail, None, None
    if isinstance(detail, list) and detail:
        items = [d for d in detail if isinstance(d, dict)]
        messages = [f"{_loc_param(d.get('loc')) or 'body'}: {d.get('msg')}" for d in items]
        first = items[0] if items else {}
        code = first.get("type")
        return ("; ".join(messages) or "invalid request", code if isinstance(code, str) else None,
                _loc_param(first.get("loc")))
    return None


def map_error(status: int, payload: Any, text: str) -> errors.GatewayError:
    """An AI21 error answer as a gateway error, status kept (``errors.from_upstream_status``)."""
    found = read_detail(payload)
    if found is None:
        return default_error(status, payload, text)
    message, code, param = found
    return errors.from_upstream_status(status, message, code=code, param=param)


def _tool_calls(calls: Any) -> list[Json] | None:
    if not isinstance(calls, list) or not calls:
        return None
    out: list[Json] = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(call.get("id"), str):
            raise errors.BadUpstreamResponse("upstream tool call lacks an id or a function")
        out.append({"id": call["id"], "type": "function",
                    "function": {"name": function.get("name"),
                                 "arguments": function.get("arguments") or ""}})
    return out


def _message(message: Any) -> Json:
    if not isinstance(message, dict):
        raise errors.BadUpstreamResponse("upstream choice has no message")
    content = message.get("content")
    out: Json = {"role": "assistant", "content": content if isinstance(content, str) else None,
                 "refusal": None}
    calls = _tool_calls(message.get("tool_calls"))
    if calls is not None:
        out["tool_calls"] = calls
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        out["reasoning_content"] = reasoning
    return out


def to_chat_completion(answer: Json, *, model: str, created: int) -> tuple[Json, Usage | None]:
    """An AI21 chat completion as an OpenAI ``chat.completion`` and its usage."""
    choices = answer.get("choices")
    if not isinstance(answer.get("id"), str) or not isinstance(choices, list):
        raise errors.BadUpstreamResponse("upstream chat completion lacks an id or choices")
    out_choices = []
    for position, choice in enumerate(choices):
        if not isinstance(choice, dict):
            raise errors.BadUpstreamResponse("upstream choice is not an object")
        index = choice.get("index")
        logprobs = choice.get("logprobs")
        out_choices.append({"index": index if isinstance(index, int) else position,
                            "message": _message(choice.get("message")),
                            "logprobs": logprobs if isinstance(logprobs, dict) else None,
                            "finish_reason": finish_reason(choice.get("finish_reason"))
                            or "stop"})
    usage = Usage.from_openai(answer.get("usage"))
    body: Json = {"id": answer["id"], "object": "chat.completion", "created": created,
                  "model": model, "choices": out_choices}
    if usage is not None:
        body["usage"] = usage.to_openai()
    return body, usage


class StreamTranslator:
    """Turns AI21 stream chunks into OpenAI ``chat.completion.chunk`` dicts.

    ``feed`` returns the chunks one AI21 chunk produces and raises ``UpstreamError`` for an
    in-band error frame. ``finished`` turns true once a choice has reported a finish reason.
    """

    def __init__(self, *, model: str, created: int) -> None:
        self.model = model
        self.created = created
        self.finished = False

    def _base(self, chunk_id: str) -> Json:
        return {"id": chunk_id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model}

    def feed(self, data: Json) -> list[Json]:
        """The chunks for one parsed ``data:`` frame (not ``[DONE]``)."""
        error = data.get("error")
        if error is not None or "detail" in data:
            found = read_detail(data)
            message = found[0] if found else (
                error.get("message") if isinstance(error, dict) else str(error))
            raise errors.BadUpstreamResponse(f"upstream failed mid-stream: {message}")
        chunk_id, choices = data.get("id"), data.get("choices")
        if not isinstance(chunk_id, str) or not isinstance(choices, list):
            raise errors.BadUpstreamResponse("upstream stream chunk lacks an id or choices")
        out: list[Json] = []
        if choices:
            out.append({**self._base(chunk_id), "choices": [self._choice(c) for c in choices]})
        usage = Usage.from_openai(data.get("usage"))
        if usage is not None:
            out.append({**self._base(chunk_id), "choices": [], "usage": usage.to_openai()})
        return out

    def _choice(self, choice: Any) -> Json:
        if not isinstance(choice, dict) or not isinstance(choice.get("delta"), dict):
            raise errors.BadUpstreamResponse("upstream stream choice lacks a delta")
        delta: Json = {}
        for key in ("role", "content", "reasoning_content"):
            value = choice["delta"].get(key)
            if isinstance(value, str):
                delta[key] = value
        calls = choice["delta"].get("tool_calls")
        if isinstance(calls, list) and calls:
            delta["tool_calls"] = [self._tool_delta(call) for call in calls]
        elif "role" in delta:
            # AI21's role chunk is {"role": "assistant"}; OpenAI's (and every other type's)
            # carries an empty content beside the role.
            delta.setdefault("content", "")
        finish = finish_reason(choice.get("finish_reason"))
        if finish is not None:
            self.finished = True
        index = choice.get("index")
        logprobs = choice.get("logprobs")
        return {"index": index if isinstance(index, int) else 0, "delta": delta,
                "logprobs": logprobs if isinstance(logprobs, dict) else None,
                "finish_reason": finish}

    @staticmethod
    def _tool_delta(call: Any) -> Json:
        if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
            raise errors.BadUpstreamResponse("upstream tool call delta lacks a function")
        function: Json = dict(call["function"])
        out: Json = {"index": call.get("index", 0), "function": function}
        if isinstance(call.get("id"), str):
            # The first delta of a call: OpenAI's carries the type and an empty arguments string.
            out["id"] = call["id"]
            out["type"] = "function"
            function.setdefault("arguments", "")
        return out
