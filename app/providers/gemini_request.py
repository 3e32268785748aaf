"""Canonical (OpenAI-shaped) chat request -> ``GenerateContentRequest`` body (Gemini API and
Vertex AI share it).

Pure functions, no I/O. Every refusal is an ``errors.InvalidRequest`` naming the offending
``param``, raised before anything is sent. The choices made where the two APIs differ are listed
in ``app.providers.gemini``. The model is not in the body: it is in the URL.
"""

from __future__ import annotations

from typing import Any

import orjson

from app import errors
from app.providers import refusals
from app.providers.base import ChatCall, Json, Target, merged_turns, tool_arguments
from app.providers.gemini_response import minted
from app.providers.media import DATA_URL, media_type
from app.providers.refusals import function_calls, function_tools, refuse_outputs
from app.providers.tool_errors import unmarked
from app.schemas import ChatRequest, Message

# Gemini-native request fields a client may send beside the OpenAI ones (the OpenAI SDK's
# ``extra_body``); forwarded as sent. ``generationConfig`` is merged under the translated one.
PASSTHROUGH_FIELDS = ("safetySettings", "cachedContent", "labels", "toolConfig")
WHO = "Gemini models"
THINKING_BUDGETS = {"none": 0, "minimal": 1024, "low": 1024, "medium": 8192, "high": 24576}
"""``reasoning_effort`` -> ``thinkingConfig.thinkingBudget``: Google's own mapping for its
OpenAI-compatible endpoint (1K, 8K and 24K tokens; ``none`` turns thinking off). Gemini 3
models take a ``thinkingBudget`` too (Google keeps it for backwards compatibility)."""

_AUDIO_TYPES = {"wav": "audio/wav", "mp3": "audio/mp3"}


def _inline(url: str, *, param: str, what: str) -> Json:
    match = DATA_URL.match(url)
    if match is None:
        raise errors.InvalidRequest(
            f"Gemini takes {what} inline only, as a base64 data: URL (it cannot fetch URLs)",
            param=param)
    return {"inlineData": {"mimeType": media_type(match["media"]), "data": match["data"]}}


def content_parts(content: str | list[Json] | None, *, param: str) -> list[Json]:
    """Gemini ``parts`` for a user (or system) message's content; empty text dropped."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[Json] = []
    for i, part in enumerate(content):
        kind = part.get("type")
        where = f"{param}[{i}]"
        if kind == "text":
            if part["text"]:
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            parts.append(_inline(part["image_url"]["url"], param=f"{where}.image_url.url",
                                 what="images"))
        elif kind == "file":
            file = part.get("file")
            data = file.get("file_data") if isinstance(file, dict) else None
            parts.append(_inline(data if isinstance(data, str) else "",
                                 param=f"{where}.file.file_data", what="files"))
        elif kind == "input_audio":
            audio = part.get("input_audio")
            fmt = audio.get("format") if isinstance(audio, dict) else None
            data = audio.get("data") if isinstance(audio, dict) else None
            if fmt not in _AUDIO_TYPES or not isinstance(data, str):
                raise errors.InvalidRequest("input_audio needs base64 'data' and a 'format' "
                                            "of wav or mp3", param=f"{where}.input_audio")
            parts.append({"inlineData": {"mimeType": _AUDIO_TYPES[fmt], "data": data}})
        else:
            raise errors.InvalidRequest(
                f"content parts of type {kind!r} are not supported by Gemini", param=where)
    return parts


def _signature(extra: dict[str, Any] | None, *, param: str) -> str | None:
    """The thought signature a client sent back in ``extra_content.google.thought_signature``
    (where ``gemini_response.carried_signature`` put it); None when there is none."""
    carried = (extra or {}).get("extra_content")
    if carried is None:
        return None
    google = carried.get("google", {}) if isinstance(carried, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else ""
    if signature is None:
        return None
    if not isinstance(signature, str) or not signature:
        raise errors.InvalidRequest("extra_content must be an object whose google."
                                    "thought_signature, if given, is a non-empty string",
                                    param=f"{param}.extra_content")
    return signature


class _Calls:
    """The tool calls met so far in a conversation: each one's function name and position (its
    ordinal among all calls), and whether call ids are echoed to Google."""

    def __init__(self, *, echo_ids: bool) -> None:
        self.names: dict[str, str] = {}
        self.positions: dict[str, int] = {}
        self.echo_ids = echo_ids

    def add(self, call_id: str, name: str) -> None:
        self.names[call_id] = name
        self.positions.setdefault(call_id, len(self.positions))

    def with_id(self, body: Json, call_id: str) -> Json:
        """``body`` (a ``functionCall`` or ``functionResponse``) with the call's ``id`` when it
        is Gemini's own and the API takes it: Gemini 3 gives every call one and matches each
        response to its call by it (the only safe match when one function is called twice).
        An id the gateway made up is not sent (Gemini never issued it), nor any to Vertex,
        whose v1 API refuses the field (400 ``Unknown name "id"``)."""
        if self.echo_ids and not minted(call_id):
            return {"id": call_id, **body}
        return body


def _model_parts(message: Message, *, param: str, calls: _Calls) -> list[Json]:
    """A model turn's parts. Each tool call's thought signature goes back on its own
    ``functionCall`` part (Gemini 3 refuses a current-turn call without it); a signature on
    the message goes on its last text part (texts are merged, so the part Google sent it on
    is not kept; Google does not require text signatures back, so one with no text to carry
    it is dropped)."""
    parts: list[Json] = []
    if isinstance(message.content, list):
        for part in message.content:
            text = part.get("text") if part.get("type") == "text" else part.get("refusal")
            if isinstance(text, str) and text:
                parts.append({"text": text})
    elif message.content:
        parts.append({"text": message.content})
    signature = _signature(message.model_extra, param=param)
    if signature is not None and parts:
        parts[-1]["thoughtSignature"] = signature
    for i, call in enumerate(function_calls(message, param=param, who=WHO)):
        where = f"{param}.tool_calls[{i}]"
        calls.add(call.id, call.function.name)
        args = tool_arguments(call.function.arguments, param=f"{where}.function.arguments")
        function_call: Json = {"functionCall": calls.with_id(
            {"name": call.function.name, "args": args}, call.id)}
        signature = _signature(call.model_extra, param=where)
        if signature is not None:
            function_call["thoughtSignature"] = signature
        parts.append(function_call)
    return parts


def _function_response(message: Message, *, param: str, calls: _Calls) -> Json:
    """A tool message as a ``functionResponse`` part, named after the call it answers. Its
    content (text parts joined by newlines) is sent as the ``response`` object when it is a
    JSON object, else under ``output`` (the key Google's reference asks for a function's
    output); a result marked as a failure (``app.providers.tool_errors``) goes, its marker
    taken off, under ``error`` (the key Google's reference asks for error details)."""
    call_id = message.tool_call_id
    if not call_id:
        raise errors.InvalidRequest("a tool message needs a tool_call_id",
                                    param=f"{param}.tool_call_id")
    name = calls.names.get(call_id)
    if name is None:
        raise errors.InvalidRequest(
            f"tool_call_id {call_id!r} matches no earlier assistant tool call (Gemini needs the "
            "function's name)", param=f"{param}.tool_call_id")
    content, failed = unmarked(message.content)
    text = content if isinstance(content, str) else "\n".join(
        part["text"] for part in content or () if part.get("type") == "text")
    try:
        value: Any = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = text
    if failed:
        response = {"error": value}
    else:
        response = value if isinstance(value, dict) else {"output": value}
    return {"functionResponse": calls.with_id({"name": name, "response": response}, call_id)}


def _in_call_order(run: list[tuple[int, str, list[Json]]], messages: list[Message],
                   calls: _Calls) -> list[tuple[int, str, list[Json]]]:
    """A run of consecutive tool messages sorted as the calls they answer were made. OpenAI
    matches results by ``tool_call_id`` in any order; Gemini, without ids (Gemini 2.x, Vertex),
    pairs a turn's responses with its calls by name and position, so two calls of one function
    answered out of order would each get the other's result."""
    def position(entry: tuple[int, str, list[Json]]) -> int:
        return calls.positions.get(messages[entry[0]].tool_call_id or "", 0)
    return sorted(run, key=position)


def translate_messages(messages: list[Message], *, echo_ids: bool = False
                       ) -> tuple[Json | None, list[Json]]:
    """(``systemInstruction``, ``contents``): system and developer text lifted out, assistant
    turns as role ``model``, tool results as ``user`` turns in the order of the calls they
    answer, consecutive turns of one role merged (so parallel calls' results travel in one
    turn, as Gemini asks); a turn left empty is a 400 (``base.merged_turns``: Gemini refuses
    empty ``parts`` too). ``echo_ids``: Gemini's call ids go back on calls and responses
    (``_Calls.with_id``)."""
    system: list[Json] = []
    translated: list[tuple[int, str, list[Json]]] = []
    results: list[tuple[int, str, list[Json]]] = []
    calls = _Calls(echo_ids=echo_ids)
    for i, message in enumerate(messages):
        if message.role != "tool" and results:
            translated.extend(_in_call_order(results, messages, calls))
            results = []
        param = f"messages[{i}]"
        if message.role in ("system", "developer"):
            for part in content_parts(message.content, param=f"{param}.content"):
                if "text" not in part:
                    raise errors.InvalidRequest("system messages take text only",
                                                param=f"{param}.content")
                system.append(part)
            continue
        if message.role == "user":
            role, parts = "user", content_parts(message.content, param=f"{param}.content")
        elif message.role == "assistant":
            role, parts = "model", _model_parts(message, param=param, calls=calls)
        elif message.role == "tool":
            results.append((i, "user", [_function_response(message, param=param, calls=calls)]))
            continue
        else:
            raise errors.InvalidRequest(
                "legacy 'function' messages are not supported by Gemini; use tools and 'tool' "
                "messages", param=f"{param}.role")
        translated.append((i, role, parts))
    translated.extend(_in_call_order(results, messages, calls))
    contents = merged_turns(translated, key="parts", reply_role="model", who="Gemini")
    return ({"parts": system} if system else None), contents


def translate_tools(request: ChatRequest) -> Json:
    """``tools`` (one ``functionDeclarations`` list) and ``toolConfig``; empty without tools."""
    if not request.tools:
        if request.tool_choice not in (None, "none", "auto"):
            raise errors.InvalidRequest("tool_choice needs tools", param="tool_choice")
        return {}
    if request.parallel_tool_calls is False:
        raise errors.InvalidRequest(
            "Gemini cannot be told to avoid parallel function calls; leave "
            "parallel_tool_calls unset", param="parallel_tool_calls")
    declarations = []
    tools = function_tools(request, who=WHO)
    for tool in tools:
        function = tool.function
        entry: Json = {"name": function.name}
        if function.description:
            entry["description"] = function.description
        if function.parameters:
            entry["parametersJsonSchema"] = function.parameters
        declarations.append(entry)
    out: Json = {"tools": [{"functionDeclarations": declarations}]}
    strict = any(tool.function.strict for tool in tools)
    config = _function_calling_config(request.tool_choice, strict=strict)
    if config is not None:
        out["toolConfig"] = {"functionCallingConfig": config}
    return out


def _function_calling_config(choice: str | Json | None, *, strict: bool) -> Json | None:
    """``functionCallingConfig`` for ``tool_choice`` (None: Google's default, AUTO).

    A ``FunctionDeclaration`` has no per-tool strict flag. Google's function-calling guide
    says modes VALIDATED and ANY ensure function schema adherence (VALIDATED "reduces
    malformed function calls (compared to AUTO mode)"). So a strict tool turns auto (or unset)
    into VALIDATED, for every tool of the request, as Cohere's request-wide ``strict_tools``
    does; required and named are ANY already."""
    if strict and choice in (None, "auto"):
        return {"mode": "VALIDATED"}
    if choice is None:
        return None
    modes = {"auto": "AUTO", "required": "ANY", "none": "NONE"}
    if isinstance(choice, str):
        return {"mode": modes[choice]}
    function = choice.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    if choice.get("type") != "function" or not isinstance(name, str):
        raise errors.InvalidRequest(
            "tool_choice must be 'none', 'auto', 'required' or "
            "{\"type\": \"function\", \"function\": {\"name\": ...}}", param="tool_choice")
    return {"mode": "ANY", "allowedFunctionNames": [name]}


def _check_supported(request: ChatRequest, body: Json) -> None:
    refusals.refuse_legacy_functions(body, who=WHO)
    refuse_outputs(body, who=WHO)
    if request.logprobs or request.top_logprobs:
        raise errors.InvalidRequest("logprobs are not translated from Gemini",
                                    param="logprobs" if request.logprobs else "top_logprobs")
    if request.logit_bias:
        raise errors.InvalidRequest("Gemini has no logit_bias", param="logit_bias")


def _response_format(request: ChatRequest) -> Json:
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        return {}
    if fmt.type == "json_object":
        return {"responseMimeType": "application/json"}
    schema = fmt.json_schema.get("schema") if fmt.json_schema else None
    if not isinstance(schema, dict):
        raise errors.InvalidRequest("response_format json_schema needs json_schema.schema",
                                    param="response_format")
    return {"responseMimeType": "application/json", "responseJsonSchema": schema}


def _smallest(*limits: int | None) -> int | None:
    given = [n for n in limits if n is not None]
    return min(given) if given else None


def generation_config(request: ChatRequest, *, target: Target, base: Any) -> Json:
    """``generationConfig``: ``base`` (the target's and the client's native one) underneath the
    translated OpenAI fields."""
    config: Json = dict(base) if isinstance(base, dict) else {}
    limit = _smallest(request.max_tokens, request.max_completion_tokens) \
        or target.max_tokens_default
    if limit is not None:
        config["maxOutputTokens"] = limit
    fields = {"temperature": request.temperature, "topP": request.top_p, "seed": request.seed,
              "presencePenalty": request.presence_penalty,
              "frequencyPenalty": request.frequency_penalty, "candidateCount": request.n}
    config.update({k: v for k, v in fields.items() if v is not None})
    if request.stop is not None:
        config["stopSequences"] = [request.stop] if isinstance(request.stop, str) \
            else request.stop
    config.update(_response_format(request))
    return config


def thinking_config(effort: Any, base: Any) -> Json:
    """``thinkingConfig`` for a ``reasoning_effort`` (``THINKING_BUDGETS``): ``base``'s (the
    native one's) ``includeThoughts`` kept, its budget or level replaced (Google refuses both
    together); another effort is a 400 naming it."""
    if effort not in THINKING_BUDGETS:
        raise errors.InvalidRequest(
            f"Gemini models take a reasoning_effort of {', '.join(THINKING_BUDGETS)}",
            param="reasoning_effort")
    kept = {k: v for k, v in _dict(base).items() if k not in ("thinkingBudget", "thinkingLevel")}
    return {**kept, "thinkingBudget": THINKING_BUDGETS[effort]}


def translate_request(call: ChatCall, *, target: Target, echo_ids: bool = False) -> Json:
    """The ``generateContent`` / ``streamGenerateContent`` body for ``call`` (``echo_ids``:
    the Gemini API, which takes call ids back; Vertex's v1 refuses them).

    Layering, lowest first: the target's ``params``, the client's Gemini-native fields
    (``PASSTHROUGH_FIELDS``; a native ``generationConfig`` merged over the target's), then the
    translated OpenAI fields.
    """
    request = call.request
    _check_supported(request, call.body)
    system, contents = translate_messages(request.messages, echo_ids=echo_ids)
    base_config = {**_dict(target.params.get("generationConfig")),
                   **_dict(call.body.get("generationConfig"))}
    payload: Json = {"contents": contents}
    if system is not None:
        payload["systemInstruction"] = system
    payload.update(translate_tools(request))
    config = generation_config(request, target=target, base=base_config)
    effort = call.body.get("reasoning_effort")
    if effort is not None:
        config["thinkingConfig"] = thinking_config(effort, config.get("thinkingConfig"))
    if config:
        payload["generationConfig"] = config
    passthrough = {k: call.body[k] for k in PASSTHROUGH_FIELDS
                   if k in call.body and k not in payload}
    params = {k: v for k, v in target.params.items() if k != "generationConfig"}
    return {**params, **passthrough, **payload}


def _dict(value: Any) -> Json:
    return value if isinstance(value, dict) else {}
