"""Canonical (OpenAI-shaped) chat request -> Bedrock Converse request body.

Pure functions, no I/O; every refusal is an ``errors.InvalidRequest`` naming its ``param``,
raised before anything is sent. The choices are listed in ``app.providers.bedrock``.
"""

from __future__ import annotations

import re

import orjson

from app import errors
from app.providers import refusals
from app.providers.anthropic_request import required_schema
from app.providers.base import ChatCall, Json, Target, merged_turns, tool_arguments
from app.providers.refusals import function_calls, function_tools, refuse_outputs
from app.providers.tool_errors import unmarked
from app.schemas import ChatRequest, Message

PASSTHROUGH_FIELDS = ("additionalModelRequestFields", "guardrailConfig", "performanceConfig",
                      "requestMetadata", "additionalModelResponseFieldPaths", "serviceTier",
                      "promptVariables", "outputConfig", "projectIdentifier")
"""Converse-native fields a client may send beside the OpenAI ones (the SDK's ``extra_body``;
``ConverseRequest``'s members in botocore's model, less those the translation makes:
``outputConfig`` is merged with a ``json_schema`` ``response_format``'s ``textFormat``, which
wins, so a client's or target's ``effort`` stays)."""
MAX_RESPONSE_FIELD_PATHS = 10
"""``additionalModelResponseFieldPaths`` holds at most 10 paths (botocore's model)."""
WHO = "Bedrock Converse models"
STOP_SEQUENCE_PATH = "/stop_sequence"
"""The JSON Pointer that asks a model's response for the stop sequence that ended it (AWS's own
example of ``additionalModelResponseFieldPaths``: Claude's response has ``stop_sequence``;
Converse ignores a path the model's response lacks)."""

_DATA_URL = re.compile(r"^data:image/(?P<format>[\w.+-]+)(?:;[^,;]*)*;base64,(?P<data>.*)$",
                       re.DOTALL)
_IMAGE_FORMATS = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg", "gif": "gif", "webp": "webp"}
CACHE_TTLS = ("5m", "1h")
"""``CachePointBlock.ttl``'s values (botocore's ``CacheTTL``)."""


def _image(url: str, *, param: str) -> Json:
    match = _DATA_URL.match(url)
    if match is None:
        raise errors.InvalidRequest(
            "Bedrock Converse takes images as base64 data: URLs (not links)", param=param)
    fmt = _IMAGE_FORMATS.get(match["format"].lower())
    if fmt is None:
        raise errors.InvalidRequest("Bedrock Converse takes png, jpeg, gif or webp images",
                                    param=param)
    return {"image": {"format": fmt, "source": {"bytes": match["data"]}}}


def _cache_point(part: Json, *, param: str) -> Json | None:
    """The ``cachePoint`` block a part's ``cache_control`` asks for (None without one): its
    ``ttl`` (``5m`` or ``1h``, botocore's ``CacheTTL``) kept, as the ``anthropic`` type keeps
    it; a ``ttl`` Converse does not take is a 400 naming it."""
    marker = part.get("cache_control")
    if not isinstance(marker, dict):
        return None
    point: Json = {"type": "default"}
    ttl = marker.get("ttl")
    if ttl is not None:
        if ttl not in CACHE_TTLS:
            raise errors.InvalidRequest("Bedrock Converse takes a cache_control ttl of '5m' or "
                                        "'1h'", param=f"{param}.cache_control.ttl")
        point["ttl"] = ttl
    return {"cachePoint": point}


def _blocks(content: str | list[Json] | None, *, param: str) -> list[Json]:
    """Converse content blocks for user, system or tool content (empty text dropped); a part's
    ``cache_control`` becomes a ``cachePoint`` after its block."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    blocks: list[Json] = []
    for i, part in enumerate(content):
        kind = part.get("type")
        if kind == "text":
            if not part["text"]:
                continue
            blocks.append({"text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image(part["image_url"]["url"], param=f"{param}[{i}].image_url.url"))
        else:
            raise errors.InvalidRequest(
                f"content parts of type {kind!r} are not supported by Bedrock Converse",
                param=f"{param}[{i}]")
        point = _cache_point(part, param=f"{param}[{i}]")
        if point is not None:
            blocks.append(point)
    return blocks


def _tool_use(message: Message, *, param: str) -> list[Json]:
    blocks: list[Json] = []
    for i, call in enumerate(function_calls(message, param=param, who=WHO)):
        arguments = tool_arguments(call.function.arguments,
                                   param=f"{param}.tool_calls[{i}].function.arguments")
        blocks.append({"toolUse": {"toolUseId": call.id, "name": call.function.name,
                                   "input": arguments}})
    return blocks


def _assistant(message: Message, *, param: str) -> list[Json]:
    """Text (and refusal) blocks, each part's ``cache_control`` a ``cachePoint`` after it, then
    the tool calls."""
    blocks: list[Json] = []
    if isinstance(message.content, list):
        for i, part in enumerate(message.content):
            text = part.get("text") if part.get("type") == "text" else part.get("refusal")
            if isinstance(text, str) and text:
                blocks.append({"text": text})
                point = _cache_point(part, param=f"{param}.content[{i}]")
                if point is not None:
                    blocks.append(point)
    elif message.content:
        blocks.append({"text": message.content})
    return blocks + _tool_use(message, param=param)


def takes_status(model: str) -> bool:
    """Whether ``model`` (a model id or inference profile) takes a ``toolResult``'s
    ``status``: AWS documents it for Amazon Nova and Anthropic Claude models only."""
    model = model.lower()
    return "anthropic.claude" in model or "amazon.nova" in model


def _tool_result(message: Message, *, param: str, status: bool) -> list[Json]:
    """The ``toolResult`` block, then one ``cachePoint`` when a part of the result carries
    ``cache_control`` (a ``toolResult``'s own content takes no ``cachePoint``; the user
    message holding it does). A result marked as a failure (``app.providers.tool_errors``)
    is ``status: "error"`` where the model takes one (``status``), its marker taken off;
    elsewhere the marker stays in its text."""
    if not message.tool_call_id:
        raise errors.InvalidRequest("a tool message needs a tool_call_id",
                                    param=f"{param}.tool_call_id")
    content_in, failed = unmarked(message.content) if status else (message.content, False)
    blocks = _blocks(content_in, param=f"{param}.content")
    content = [b for b in blocks if "cachePoint" not in b]
    points = [b for b in blocks if "cachePoint" in b]
    result: Json = {"toolUseId": message.tool_call_id, "content": content or [{"text": ""}]}
    if failed:
        result["status"] = "error"
    return [{"toolResult": result}, *points[-1:]]


def translate_messages(messages: list[Message], *, status: bool = False
                       ) -> tuple[list[Json], list[Json]]:
    """(``system`` blocks, ``messages``): system and developer text lifted out, tool results as
    user turns, consecutive turns of one role merged (Converse wants them alternating); a turn
    left empty is a 400 (``base.merged_turns``: Converse refuses blank messages too), and so is
    a conversation whose first turn is the assistant's (Converse wants a user message first;
    the gateway does not make one up). ``status``: the model takes a ``toolResult``'s
    ``status`` (``takes_status``)."""
    system: list[Json] = []
    translated: list[tuple[int, str, list[Json]]] = []
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if message.role in ("system", "developer"):
            system.extend(b for b in _blocks(message.content, param=f"{param}.content")
                          if "text" in b or "cachePoint" in b)
            continue
        if message.role == "user":
            role, blocks = "user", _blocks(message.content, param=f"{param}.content")
        elif message.role == "assistant":
            role, blocks = "assistant", _assistant(message, param=param)
        elif message.role == "tool":
            role, blocks = "user", _tool_result(message, param=param, status=status)
        else:
            raise errors.InvalidRequest("legacy 'function' messages are not supported; use "
                                        "tools and 'tool' messages", param=f"{param}.role")
        translated.append((i, role, blocks))
    first = next((i for i, _, blocks in translated if blocks), None)
    turns = merged_turns(translated, key="content", reply_role="assistant",
                         who="Bedrock Converse")
    if turns[0]["role"] != "user":
        raise errors.InvalidRequest(
            f"Bedrock Converse needs a conversation that starts with a user message; "
            f"messages[{first}] is the assistant's", param=f"messages[{first}].role")
    for turn in turns:
        if turn["role"] == "user":
            turn["content"] = _tool_results_first(turn["content"])
    return system, turns


def _tool_results_first(blocks: list[Json]) -> list[Json]:
    """Tool results lead a user turn (Converse wants them first), each ``cachePoint`` kept
    right after the block it followed."""
    if not any("toolResult" in b for b in blocks):
        return blocks
    groups: list[list[Json]] = []
    for block in blocks:
        if "cachePoint" in block and groups:
            groups[-1].append(block)
        else:
            groups.append([block])
    groups.sort(key=lambda group: "toolResult" not in group[0])
    return [block for group in groups for block in group]


def _has_tool_blocks(turns: list[Json]) -> bool:
    return any("toolUse" in b or "toolResult" in b for t in turns for b in t["content"])


PLACEHOLDER_DESCRIPTION = ("Called earlier in this conversation; not available now. Do not "
                           "call it.")


def _history_tools(turns: list[Json]) -> Json:
    """A ``toolConfig`` declaring the tools a conversation's ``toolUse`` blocks name, each with
    an open schema (empty when it used none). Converse refuses toolUse/toolResult blocks without
    a ``toolConfig`` (ValidationException "The toolConfig field must be defined when using
    toolUse and toolResult content blocks."), while OpenAI takes a tool-call history without
    ``tools`` (a final or summary turn); declaring the history's tools is how AWS's own
    bedrock-access-gateway and strands-agents serve it. The description asks the model not to
    call them: the client offered none."""
    names = dict.fromkeys(b["toolUse"]["name"] for t in turns for b in t["content"]
                          if "toolUse" in b)
    if not names:
        return {}
    return {"toolConfig": {"tools": [
        {"toolSpec": {"name": name, "description": PLACEHOLDER_DESCRIPTION,
                      "inputSchema": {"json": {"type": "object"}}}} for name in names]}}


def tool_config(request: ChatRequest, turns: list[Json]) -> Json:
    """``toolConfig``: the request's tools; without any, the tools a conversation's history
    used (``_history_tools``), else empty."""
    functions = function_tools(request, who=WHO)
    choice = request.tool_choice
    if not functions:
        if choice not in (None, "none", "auto"):
            raise errors.InvalidRequest("tool_choice needs tools", param="tool_choice")
        return _history_tools(turns)
    if request.parallel_tool_calls is False:
        raise errors.InvalidRequest("Bedrock Converse cannot turn parallel tool calls off",
                                    param="parallel_tool_calls")
    if choice == "none":
        if _has_tool_blocks(turns):
            raise errors.InvalidRequest(
                "Bedrock Converse has no tool_choice 'none' and needs the tools of a "
                "conversation that used them", param="tool_choice")
        return {}  # the model cannot call tools it is not shown
    tools = [{"toolSpec": {
        "name": tool.function.name,
        **({"description": tool.function.description} if tool.function.description else {}),
        "inputSchema": {"json": tool.function.parameters or {"type": "object",
                                                             "properties": {}}},
        # ToolSpecification.strict: structured output on the tool's input (false is the
        # default, so it is sent only when asked for).
        **({"strict": True} if tool.function.strict else {})}}
        for tool in functions]
    config: Json = {"tools": tools}
    if choice == "auto":
        config["toolChoice"] = {"auto": {}}
    elif choice == "required":
        config["toolChoice"] = {"any": {}}
    elif choice is not None:
        function = choice.get("function") if isinstance(choice, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str):
            raise errors.InvalidRequest(
                "tool_choice must be 'none', 'auto', 'required' or "
                "{\"type\": \"function\", \"function\": {\"name\": ...}}", param="tool_choice")
        config["toolChoice"] = {"tool": {"name": name}}
    return {"toolConfig": config}


def output_config(request: ChatRequest) -> Json:
    """``outputConfig.textFormat`` for a ``json_schema`` response format (Converse's own
    structured output: the schema travels as a JSON string)."""
    schema = required_schema(request, who="Bedrock Converse")
    if schema is None:
        return {}
    fmt = request.response_format
    assert fmt is not None and fmt.json_schema is not None
    definition: Json = {"schema": orjson.dumps(schema).decode()}
    for key in ("name", "description"):
        if isinstance(fmt.json_schema.get(key), str):
            definition[key] = fmt.json_schema[key]
    return {"outputConfig": {"textFormat": {"type": "json_schema",
                                            "structure": {"jsonSchema": definition}}}}


def _check_supported(request: ChatRequest, body: Json) -> None:
    refusals.refuse_legacy_functions(body, who=WHO)
    refuse_outputs(body, who=WHO)
    if request.n is not None and request.n > 1:
        raise errors.InvalidRequest("Bedrock Converse returns one choice; n must be 1",
                                    param="n")
    if request.temperature is not None and request.temperature > 1:
        raise errors.InvalidRequest(  # InferenceConfiguration.temperature: 0 to 1, any model
            "Bedrock Converse takes a temperature between 0 and 1", param="temperature")
    stops = [request.stop] if isinstance(request.stop, str) else request.stop or []
    if any(not stop for stop in stops):
        raise errors.InvalidRequest("Bedrock Converse takes non-empty stop sequences",
                                    param="stop")
    paths = body.get("additionalModelResponseFieldPaths")
    if isinstance(paths, list) and len(paths) > MAX_RESPONSE_FIELD_PATHS:
        raise errors.InvalidRequest(
            f"Bedrock Converse takes at most {MAX_RESPONSE_FIELD_PATHS} "
            "additionalModelResponseFieldPaths", param="additionalModelResponseFieldPaths")
    if request.logprobs or request.top_logprobs:
        raise errors.InvalidRequest("Bedrock Converse does not return logprobs",
                                    param="logprobs" if request.logprobs else "top_logprobs")
    if body.get("reasoning_effort") is not None:
        # Converse's outputConfig.effort (low to max) is a request member, but which models
        # take it is not published per model, and OpenAI's none/minimal have no counterpart:
        # the client sends Converse's own field for the models it knows take it.
        raise errors.InvalidRequest(
            "Bedrock Converse has no reasoning_effort; send Converse's own outputConfig.effort "
            "(low, medium, high, xhigh or max) for a model that takes it, or ask for Claude's "
            "thinking with additionalModelRequestFields.thinking", param="reasoning_effort")


def inference_config(request: ChatRequest, *, target: Target, max_tokens_default: int | None
                     ) -> Json:
    """``inferenceConfig``: the smaller of the client's two token limits, else a default."""
    config: Json = {}
    limits = [n for n in (request.max_tokens, request.max_completion_tokens) if n is not None]
    max_tokens = min(limits) if limits else (target.max_tokens_default or max_tokens_default)
    if max_tokens is not None:
        config["maxTokens"] = max_tokens
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.stop is not None:
        config["stopSequences"] = [request.stop] if isinstance(request.stop, str) \
            else list(request.stop)
    return config


def translate_request(call: ChatCall, *, target: Target, max_tokens_default: int | None
                      ) -> Json:
    """The Converse (or ConverseStream: the same body) request body for ``call``. The target's
    ``params`` lie underneath, then the client's Converse-native fields, then the translation;
    ``inferenceConfig`` merges the target's with the client's."""
    request = call.request
    _check_supported(request, call.body)
    system, turns = translate_messages(request.messages, status=takes_status(target.model))
    payload: Json = {"messages": turns}
    if system:
        payload["system"] = system
    base = target.params.get("inferenceConfig")
    inference = {**(base if isinstance(base, dict) else {}),
                 **inference_config(request, target=target,
                                    max_tokens_default=max_tokens_default)}
    if inference:
        payload["inferenceConfig"] = inference
    payload.update(tool_config(request, turns))
    payload.update(output_config(request))
    passthrough = {k: call.body[k] for k in PASSTHROUGH_FIELDS if k in call.body}
    out = {**target.params, **passthrough, **payload}
    if "outputConfig" in payload:  # merged, as inferenceConfig is: the effort asked for stays
        out["outputConfig"] = {**_dict(target.params.get("outputConfig")),
                               **_dict(passthrough.get("outputConfig")),
                               **payload["outputConfig"]}
    if inference.get("stopSequences"):
        _ask_for_stop_sequence(out)
    return out


def _dict(value: object) -> Json:
    return value if isinstance(value, dict) else {}


def _ask_for_stop_sequence(payload: Json) -> None:
    """Add ``STOP_SEQUENCE_PATH`` to the payload's ``additionalModelResponseFieldPaths`` (in
    place; a client's or target's list that is not a list is left as it is, for Converse to
    judge, and so is a full one: the stop sequence is then named only when the request has
    one)."""
    paths = payload.get("additionalModelResponseFieldPaths")
    if paths is None:
        payload["additionalModelResponseFieldPaths"] = [STOP_SEQUENCE_PATH]
    elif isinstance(paths, list) and STOP_SEQUENCE_PATH not in paths \
            and len(paths) < MAX_RESPONSE_FIELD_PATHS:
        payload["additionalModelResponseFieldPaths"] = [*paths, STOP_SEQUENCE_PATH]
