"""Canonical (OpenAI-shaped) chat request -> AI21 Jamba chat completions payload.

Pure functions, no I/O. Every refusal is an ``errors.InvalidRequest`` naming the offending
``param`` (``messages[1].content[0]``), raised before anything is sent. The payload is built
field by field from what AI21's ``ChatRequest`` defines (``model``, ``messages``, ``tools``,
``n``, ``max_tokens``, ``temperature``, ``top_p``, ``stop``, ``stream``, ``documents``,
``response_format``); the choices made where AI21 and OpenAI differ are listed in
``app.providers.ai21``.
"""

from __future__ import annotations

from app import errors
from app.providers.base import ChatCall, Json, Target
from app.providers.refusals import function_calls, function_tools, refuse_outputs
from app.schemas import ChatRequest, Message

PASSTHROUGH_FIELDS = ("documents",)
"""AI21-native request fields a client may send beside the OpenAI ones (the OpenAI SDK's
``extra_body``); forwarded as sent."""

MAX_N = 16
"""AI21's range for ``n`` is 1..16, and ``n`` must be 1 when streaming."""
MAX_TOKENS = 4096
"""AI21's largest ``max_tokens`` for Jamba models."""

WHO = "AI21 models"
REFUSED_FIELDS = {
    "functions": "legacy 'functions' are not supported by AI21; use tools",
    "function_call": "legacy 'function_call' is not supported by AI21; use tools",
}
"""OpenAI fields outside the typed request model that would change the answer (refused when
set; audio, ``modalities`` and ``web_search_options`` too: ``refusals.refuse_outputs``)."""


def _text_of(content: str | list[Json] | None, *, param: str, refusals: bool = False) -> str:
    """A message's content as AI21's single string: text parts joined by newlines (as vLLM's
    chat template renders them); any other part is refused (``refusals``: an assistant's
    earlier ``refusal`` parts count as text)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts: list[str] = []
    for i, part in enumerate(content):
        kind = part.get("type")
        if kind == "text":
            texts.append(part["text"])
        elif refusals and kind == "refusal" and isinstance(part.get("refusal"), str):
            texts.append(part["refusal"])
        else:
            raise errors.InvalidRequest(
                f"AI21 models take text only; content parts of type {kind!r} are not supported",
                param=f"{param}[{i}]")
    return "\n".join(texts)


def _assistant(message: Message, *, param: str) -> Json:
    out: Json = {"role": "assistant"}
    text = _text_of(message.content, param=f"{param}.content", refusals=True)
    calls = function_calls(message, param=param, who=WHO)
    if text or not calls:
        out["content"] = text
    if calls:
        out["tool_calls"] = [{"id": call.id, "type": "function",
                              "function": {"name": call.function.name,
                                           "arguments": call.function.arguments}}
                             for call in calls]
    return out


def translate_message(message: Message, *, param: str) -> Json:
    """One message in AI21's shape (``name`` is dropped: AI21 messages have no author name)."""
    role = message.role
    if role in ("system", "developer"):
        return {"role": "system", "content": _text_of(message.content, param=f"{param}.content")}
    if role == "user":
        return {"role": "user", "content": _text_of(message.content, param=f"{param}.content")}
    if role == "assistant":
        return _assistant(message, param=param)
    if role == "tool":
        if not message.tool_call_id:
            raise errors.InvalidRequest("a tool message needs a tool_call_id",
                                        param=f"{param}.tool_call_id")
        return {"role": "tool", "tool_call_id": message.tool_call_id,
                "content": _text_of(message.content, param=f"{param}.content")}
    raise errors.InvalidRequest(
        "legacy 'function' messages are not supported by AI21; use tools and 'tool' messages",
        param=f"{param}.role")


def translate_tools(request: ChatRequest) -> Json:
    """``tools`` in AI21's shape (empty without tools, or with ``tool_choice: "none"``, which
    AI21 cannot express otherwise: a model offered no tools calls none)."""
    functions = function_tools(request, who=WHO)
    choice = request.tool_choice
    if not functions and choice not in (None, "none", "auto"):
        raise errors.InvalidRequest("tool_choice needs tools", param="tool_choice")
    if not functions or choice == "none":
        return {}
    if choice not in (None, "auto"):
        raise errors.InvalidRequest(
            "AI21 models choose their tools themselves: tool_choice may only be 'auto' or "
            "'none'", param="tool_choice")
    if request.parallel_tool_calls is False:
        raise errors.InvalidRequest(
            "AI21 models cannot be limited to one tool call per answer",
            param="parallel_tool_calls")
    tools: list[Json] = []
    for i, tool in enumerate(functions):
        function = tool.function
        if function.strict:
            raise errors.InvalidRequest(
                "AI21 has no strict mode: tool arguments are not guaranteed to match the schema",
                param=f"tools[{i}].function.strict")
        parameters = function.parameters or {"type": "object", "properties": {}}
        if parameters.get("type", "object") != "object":
            raise errors.InvalidRequest("AI21 tool parameters must be a JSON schema of type "
                                        "'object'", param=f"tools[{i}].function.parameters")
        entry: Json = {"name": function.name,
                       "parameters": {"type": "object", "properties": {}, **parameters}}
        if function.description:
            entry["description"] = function.description
        tools.append({"type": "function", "function": entry})
    return {"tools": tools}


def _response_format(request: ChatRequest) -> Json:
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        return {}
    if fmt.type == "json_schema":
        raise errors.InvalidRequest(
            "AI21 models have a JSON mode but no schema-constrained output: use "
            "response_format {\"type\": \"json_object\"} and describe the schema in the prompt",
            param="response_format")
    return {"response_format": {"type": "json_object"}}


def _limit(request: ChatRequest, target: Target) -> Json:
    """``max_tokens``: the client's limit (the smaller of ``max_tokens`` and
    ``max_completion_tokens`` when it sent both), else the target's default, else none (AI21's
    own default applies)."""
    given = [(name, value) for name, value in (("max_tokens", request.max_tokens),
                                               ("max_completion_tokens",
                                                request.max_completion_tokens))
             if value is not None]
    if given:
        name, value = min(given, key=lambda pair: pair[1])
        if value > MAX_TOKENS:
            raise errors.InvalidRequest(
                f"AI21 models generate at most {MAX_TOKENS} tokens per answer", param=name)
        return {"max_tokens": value}
    if target.max_tokens_default is not None:
        return {"max_tokens": min(target.max_tokens_default, MAX_TOKENS)}
    return {}


def _sampling(request: ChatRequest, *, stream: bool) -> Json:
    out: Json = {}
    n = request.n
    if n is not None:
        if n > MAX_N:
            raise errors.InvalidRequest(f"AI21 returns at most {MAX_N} choices", param="n")
        if n > 1 and stream:
            raise errors.InvalidRequest("AI21 streams one choice: n must be 1 with stream",
                                        param="n")
        if n > 1 and request.temperature == 0:
            raise errors.InvalidRequest(
                "with n > 1, temperature 0 would make every choice the same; AI21 refuses it",
                param="temperature")
        out["n"] = n
    if request.temperature is not None:
        out["temperature"] = request.temperature
    if request.top_p is not None:
        if request.top_p == 0:
            raise errors.InvalidRequest("AI21 takes a top_p above 0 (and at most 1)",
                                        param="top_p")
        out["top_p"] = request.top_p
    if request.stop is not None:
        out["stop"] = request.stop
    return out


def _check_refused(request: ChatRequest, body: Json) -> None:
    if request.logprobs or request.top_logprobs:
        raise errors.InvalidRequest("AI21 chat completions do not return logprobs",
                                    param="logprobs" if request.logprobs else "top_logprobs")
    if request.logit_bias:
        raise errors.InvalidRequest("AI21 models take no logit_bias", param="logit_bias")
    refuse_outputs(body, who=WHO)
    for name, reason in REFUSED_FIELDS.items():
        if body.get(name) is not None:
            raise errors.InvalidRequest(reason, param=name)


def translate_request(call: ChatCall, *, target: Target, stream: bool) -> Json:
    """The ``POST /chat/completions`` payload for ``call``.

    Layering, lowest first: the target's ``params``, the client's AI21-native fields
    (``PASSTHROUGH_FIELDS``), then the translated OpenAI fields.
    """
    request = call.request
    _check_refused(request, call.body)
    payload: Json = {
        "model": target.model,
        "messages": [translate_message(m, param=f"messages[{i}]")
                     for i, m in enumerate(request.messages)],
    }
    payload.update(_limit(request, target))
    payload.update(_sampling(request, stream=stream))
    payload.update(translate_tools(request))
    payload.update(_response_format(request))
    if stream:
        payload["stream"] = True
    passthrough = {k: call.body[k] for k in PASSTHROUGH_FIELDS if k in call.body}
    return {**target.params, **passthrough, **payload}

