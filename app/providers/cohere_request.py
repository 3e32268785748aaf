"""Canonical (OpenAI-shaped) chat request -> Cohere Chat API v2 (``POST /v2/chat``) payload.

Pure functions, no I/O. Every refusal is an ``errors.InvalidRequest`` naming the offending
``param``, raised before anything is sent. The choices made where the two APIs differ are listed
in ``app.providers.cohere``.
"""

from __future__ import annotations

import re
from typing import Any

from app import errors
from app.providers import refusals
from app.providers.base import ChatCall, Json, Target
from app.providers.refusals import function_calls, function_tools, refuse_outputs
from app.schemas import ChatRequest, Message

PASSTHROUGH_FIELDS = ("k", "safety_mode", "documents", "citation_options", "thinking",
                      "priority")
"""Cohere-native chat fields a client may send beside the OpenAI ones (the OpenAI SDK's
``extra_body``); forwarded as sent."""

WHO = "Cohere models"
EMBED_ONLY_PARAMS = frozenset({"input_type", "embedding_types", "truncate", "output_dimension"})
"""Target ``params`` that belong to the embed side and are never sent to ``/v2/chat``."""

P_RANGE = (0.01, 0.99)
"""Cohere's range for ``p`` (OpenAI's ``top_p`` is clamped into it)."""

_IMAGE_DATA_URL = re.compile(r"^data:image/[\w.+-]+(?:;[^,;]*)*;base64,", re.IGNORECASE)


def _text_parts(content: str | list[Json] | None, *, param: str, role: str) -> list[str]:
    """The texts of a message that may hold text parts only (system, assistant, tool)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content] if content else []
    texts: list[str] = []
    for i, part in enumerate(content):
        kind = part.get("type")
        if kind == "text":
            texts.append(part["text"])
        elif kind == "refusal" and role == "assistant" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])  # an earlier refusal is plain text to Cohere
        else:
            raise errors.InvalidRequest(
                f"Cohere takes only text in {role} messages, not {kind!r} parts",
                param=f"{param}[{i}]")
    return [t for t in texts if t]


def _image_part(part: Json, *, param: str) -> Json:
    image = part["image_url"]
    url = image["url"]
    if not (url.startswith(("http://", "https://")) or _IMAGE_DATA_URL.match(url)):
        raise errors.InvalidRequest(
            "image_url.url must be an http(s) URL or a base64 data:image/... URL",
            param=f"{param}.image_url.url")
    out: Json = {"url": url}
    detail = image.get("detail")
    if detail is not None:
        if detail not in ("auto", "low", "high"):
            raise errors.InvalidRequest("image_url.detail must be 'auto', 'low' or 'high'",
                                        param=f"{param}.image_url.detail")
        out["detail"] = detail
    return {"type": "image_url", "image_url": out}


def _user_content(content: str | list[Json] | None, *, param: str) -> str | list[Json]:
    """A user message's content: a string, or Cohere text and image_url parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts: list[Json] = []
    for i, part in enumerate(content):
        kind = part.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            parts.append(_image_part(part, param=f"{param}[{i}]"))
        else:
            raise errors.InvalidRequest(
                f"content parts of type {kind!r} are not supported by Cohere",
                param=f"{param}[{i}]")
    return parts


def _assistant(message: Message, *, param: str) -> Json | None:
    """An assistant turn; its text becomes ``tool_plan`` when it carries tool calls (None: an
    empty turn, left out)."""
    text = "".join(_text_parts(message.content, param=f"{param}.content", role="assistant"))
    out: Json = {"role": "assistant"}
    calls = function_calls(message, param=param, who=WHO)
    if calls:
        out["tool_calls"] = [{"id": call.id, "type": "function",
                              "function": {"name": call.function.name,
                                           "arguments": call.function.arguments or "{}"}}
                             for call in calls]
        if text:
            out["tool_plan"] = text
        return out
    if not text:
        return None
    out["content"] = text
    return out


def _tool(message: Message, *, param: str) -> Json:
    if not message.tool_call_id:
        raise errors.InvalidRequest("a tool message needs a tool_call_id",
                                    param=f"{param}.tool_call_id")
    content: str | list[Json]
    if isinstance(message.content, list):
        content = [{"type": "text", "text": text} for text in
                   _text_parts(message.content, param=f"{param}.content", role="tool")]
    else:
        content = message.content or ""
    return {"role": "tool", "tool_call_id": message.tool_call_id, "content": content}


def translate_messages(messages: list[Message]) -> list[Json]:
    """Cohere v2 ``messages``: developer messages become system ones, in place."""
    out: list[Json] = []
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if message.role in ("system", "developer"):
            text = "\n\n".join(_text_parts(message.content, param=f"{param}.content",
                                           role="system"))
            out.append({"role": "system", "content": text})
        elif message.role == "user":
            out.append({"role": "user",
                        "content": _user_content(message.content, param=f"{param}.content")})
        elif message.role == "assistant":
            turn = _assistant(message, param=param)
            if turn is not None:
                out.append(turn)
        elif message.role == "tool":
            out.append(_tool(message, param=param))
        else:
            raise errors.InvalidRequest(
                "legacy 'function' messages are not supported by Cohere; use tools and 'tool' "
                "messages", param=f"{param}.role")
    return out


def translate_tools(request: ChatRequest) -> Json:
    """``tools``, ``tool_choice`` and ``strict_tools`` (empty when the client sent no tools).

    Cohere's ``tool_choice`` is ``REQUIRED`` or ``NONE``; a choice naming one function is sent
    as that function alone with ``REQUIRED``, which forces exactly that call.
    """
    if not request.tools:
        if request.tool_choice not in (None, "none", "auto"):
            raise errors.InvalidRequest("tool_choice needs tools", param="tool_choice")
        return {}
    if request.parallel_tool_calls is False:
        raise errors.InvalidRequest(
            "Cohere cannot be limited to one tool call per answer; leave parallel_tool_calls "
            "unset or true", param="parallel_tool_calls")
    tools = function_tools(request, who=WHO)
    choice = request.tool_choice
    cohere_choice: str | None = None
    if choice == "required":
        cohere_choice = "REQUIRED"
    elif choice == "none":
        cohere_choice = "NONE"
    elif isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if choice.get("type") != "function" or not isinstance(name, str):
            raise errors.InvalidRequest(
                "tool_choice must be 'none', 'auto', 'required' or "
                "{\"type\": \"function\", \"function\": {\"name\": ...}}", param="tool_choice")
        tools = [tool for tool in tools if tool.function.name == name]
        if not tools:
            raise errors.InvalidRequest(f"tool_choice names {name!r}, which is not in tools",
                                        param="tool_choice")
        cohere_choice = "REQUIRED"
    out: Json = {"tools": [
        {"type": "function", "function": {
            "name": tool.function.name,
            "parameters": tool.function.parameters or {"type": "object", "properties": {}},
            **({"description": tool.function.description}
               if tool.function.description else {})}}
        for tool in tools]}
    if cohere_choice is not None:
        out["tool_choice"] = cohere_choice
    if any(tool.function.strict for tool in tools):
        out["strict_tools"] = True
    return out


def _response_format(request: ChatRequest) -> Json:
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        return {}
    if request.tools:
        raise errors.InvalidRequest(
            "Cohere does not take response_format together with tools", param="response_format")
    if fmt.type == "json_object":
        return {"response_format": {"type": "json_object"}}
    schema = fmt.json_schema.get("schema") if fmt.json_schema else None
    if not isinstance(schema, dict):
        raise errors.InvalidRequest(
            "response_format json_schema needs json_schema.schema (an object)",
            param="response_format.json_schema.schema")
    return {"response_format": {"type": "json_object", "json_schema": schema}}


def _check_supported(request: ChatRequest, body: Json) -> None:
    refusals.refuse_legacy_functions(body, who=WHO)
    refuse_outputs(body, who=WHO)
    if body.get("reasoning_effort") is not None:
        # Cohere's reasoning models take ``thinking`` ({"type": "enabled"|"disabled",
        # "token_budget"}), which has no published mapping from OpenAI's effort levels.
        raise errors.InvalidRequest(
            "Cohere has no reasoning_effort; send Cohere's own thinking field instead",
            param="reasoning_effort")
    if request.n is not None and request.n > 1:
        raise errors.InvalidRequest("Cohere models return one choice; n must be 1", param="n")
    if request.temperature is not None and request.temperature > 1:
        raise errors.InvalidRequest("Cohere models take a temperature between 0 and 1",
                                    param="temperature")
    if request.top_logprobs:
        raise errors.InvalidRequest(
            "Cohere returns the chosen tokens' logprobs only, no alternatives; top_logprobs "
            "must be 0", param="top_logprobs")
    if request.logit_bias:
        raise errors.InvalidRequest("Cohere's Chat API v2 has no logit_bias", param="logit_bias")
    if request.seed is not None and request.seed < 0:
        raise errors.InvalidRequest("Cohere takes a seed of 0 or more", param="seed")
    for name in ("frequency_penalty", "presence_penalty"):
        value = getattr(request, name)
        if value is not None and not 0 <= value <= 1:
            raise errors.InvalidRequest(f"Cohere takes a {name} between 0 and 1", param=name)


def _sampling(request: ChatRequest) -> Json:
    out: Json = {}
    if request.temperature is not None:
        out["temperature"] = request.temperature
    if request.top_p is not None:
        low, high = P_RANGE
        out["p"] = min(max(request.top_p, low), high)
    if request.stop is not None:
        out["stop_sequences"] = [request.stop] if isinstance(request.stop, str) else request.stop
    if request.seed is not None:
        out["seed"] = request.seed
    if request.frequency_penalty is not None:
        out["frequency_penalty"] = request.frequency_penalty
    if request.presence_penalty is not None:
        out["presence_penalty"] = request.presence_penalty
    if request.logprobs:
        out["logprobs"] = True
    return out


def _smallest(*limits: int | None) -> int | None:
    given = [n for n in limits if n is not None]
    return min(given) if given else None


def translate_request(call: ChatCall, *, target: Target, stream: bool) -> Json:
    """The ``POST /v2/chat`` payload for ``call``.

    Layering, lowest first: the target's ``params`` (less the embed-only ones), the client's
    Cohere-native fields (``PASSTHROUGH_FIELDS``), then the translated OpenAI fields.
    ``max_tokens`` is the client's limit (the smaller of ``max_tokens`` and
    ``max_completion_tokens``), else the target's default, else unset (Cohere then allows the
    model's own maximum).
    """
    request = call.request
    _check_supported(request, call.body)
    payload: Json = {"model": target.model, "messages": translate_messages(request.messages),
                     "stream": stream}
    limit = _smallest(request.max_tokens, request.max_completion_tokens) \
        or target.max_tokens_default
    if limit is not None:
        payload["max_tokens"] = limit
    payload.update(_sampling(request))
    payload.update(translate_tools(request))
    payload.update(_response_format(request))
    params: dict[str, Any] = {k: v for k, v in target.params.items()
                              if k not in EMBED_ONLY_PARAMS}
    passthrough = {k: call.body[k] for k in PASSTHROUGH_FIELDS if k in call.body}
    return {**params, **passthrough, **payload}
