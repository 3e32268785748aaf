"""Canonical (OpenAI-shaped) chat request -> Anthropic Messages API payload.

Pure functions, no I/O. Every refusal is an ``errors.InvalidRequest`` naming the offending
``param`` (``messages[3].tool_calls[0].function.arguments``), raised before anything is sent.
The choices made where the two APIs differ are listed in ``app.providers.anthropic``.
"""

from __future__ import annotations

from app import errors
from app.providers import refusals
from app.providers.base import ChatCall, Json, Target, merged_turns, tool_arguments
from app.providers.media import DATA_URL, media_type
from app.providers.refusals import function_calls, function_tools, refuse_outputs
from app.providers.tool_errors import unmarked
from app.schemas import ChatRequest, Message, ToolCall

# Anthropic-native request fields a client may send beside the OpenAI ones (as the OpenAI SDK's
# ``extra_body``); they are forwarded as sent.
PASSTHROUGH_FIELDS = ("top_k", "thinking")
WHO = "Anthropic models"

_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


def _with_cache_control(block: Json, part: Json) -> Json:
    """Carry Anthropic's ``cache_control`` marker from an OpenAI content part to its block."""
    cache_control = part.get("cache_control")
    if isinstance(cache_control, dict):
        block["cache_control"] = cache_control
    return block


def _image_block(url: str, *, param: str) -> Json:
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    match = DATA_URL.match(url)
    if match is None:
        raise errors.InvalidRequest(
            "image_url.url must be an http(s) URL or a base64 data: URL", param=param)
    media = media_type(match["media"])
    if media not in _IMAGE_TYPES:
        raise errors.InvalidRequest(
            f"Anthropic accepts only {', '.join(sorted(_IMAGE_TYPES))} images, not {media}",
            param=param)
    return {"type": "image",
            "source": {"type": "base64", "media_type": media, "data": match["data"]}}


def _file_block(part: Json, *, param: str) -> Json:
    file = part.get("file")
    data = file.get("file_data") if isinstance(file, dict) else None
    match = DATA_URL.match(data) if isinstance(data, str) else None
    if match is None or match["media"].lower() != "application/pdf":
        raise errors.InvalidRequest(
            "Anthropic accepts files only as a PDF in file.file_data (a base64 data: URL)",
            param=param)
    return {"type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": match["data"]}}


def content_blocks(content: str | list[Json] | None, *, param: str) -> list[Json]:
    """Anthropic content blocks for a user or tool message's content (empty text dropped)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[Json] = []
    for i, part in enumerate(content):
        kind = part.get("type")
        where = f"{param}[{i}]"
        if kind == "text":
            if part["text"]:
                blocks.append(_with_cache_control({"type": "text", "text": part["text"]}, part))
        elif kind == "image_url":
            block = _image_block(part["image_url"]["url"], param=f"{where}.image_url.url")
            blocks.append(_with_cache_control(block, part))
        elif kind == "file":
            blocks.append(_with_cache_control(_file_block(part, param=f"{where}.file"), part))
        else:
            raise errors.InvalidRequest(
                f"content parts of type {kind!r} are not supported by Anthropic", param=where)
    return blocks


def _tool_use_block(call: ToolCall, *, param: str) -> Json:
    return {"type": "tool_use", "id": call.id, "name": call.function.name,
            "input": tool_arguments(call.function.arguments, param=param)}


def _thinking_blocks(message: Message, *, param: str) -> list[Json]:
    """An assistant message's ``thinking_blocks`` (as the gateway returned them: ``thinking``
    with its ``signature``, ``redacted_thinking`` with its ``data``), sent back unchanged."""
    given = (message.model_extra or {}).get("thinking_blocks")
    if given is None:
        return []
    if not isinstance(given, list):
        raise errors.InvalidRequest("thinking_blocks must be a list of thinking blocks",
                                    param=f"{param}.thinking_blocks")
    blocks: list[Json] = []
    for i, block in enumerate(given):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "thinking" and isinstance(block.get("thinking"), str) \
                and isinstance(block.get("signature"), str):
            blocks.append({"type": "thinking", "thinking": block["thinking"],
                           "signature": block["signature"]})
        elif kind == "redacted_thinking" and isinstance(block.get("data"), str):
            blocks.append({"type": "redacted_thinking", "data": block["data"]})
        else:
            raise errors.InvalidRequest(
                "a thinking block is {\"type\": \"thinking\", \"thinking\": ..., \"signature\": "
                "...} or {\"type\": \"redacted_thinking\", \"data\": ...}, as returned",
                param=f"{param}.thinking_blocks[{i}]")
    return blocks


def _assistant_blocks(message: Message, *, param: str) -> list[Json]:
    # Anthropic wants an assistant turn's thinking first, before its text and tool uses.
    blocks: list[Json] = _thinking_blocks(message, param=param)
    if isinstance(message.content, list):
        # An assistant's earlier refusal is plain text to Anthropic.
        for part in message.content:
            text = part.get("text") if part.get("type") == "text" else part.get("refusal")
            if isinstance(text, str) and text:
                blocks.append(_with_cache_control({"type": "text", "text": text}, part))
    elif message.content:
        blocks.append({"type": "text", "text": message.content})
    for i, call in enumerate(function_calls(message, param=param, who=WHO)):
        blocks.append(_tool_use_block(call, param=f"{param}.tool_calls[{i}].function.arguments"))
    return blocks


def _tool_result_block(message: Message, *, param: str) -> Json:
    if not message.tool_call_id:
        raise errors.InvalidRequest("a tool message needs a tool_call_id",
                                    param=f"{param}.tool_call_id")
    block: Json = {"type": "tool_result", "tool_use_id": message.tool_call_id}
    content, failed = unmarked(message.content)  # app.providers.tool_errors
    if isinstance(content, str):
        if content:
            block["content"] = content
    else:
        parts = content_blocks(content, param=f"{param}.content")
        if parts:
            block["content"] = parts
    if failed:
        block["is_error"] = True
    return block


def _turn(message: Message, *, param: str) -> tuple[str, list[Json]]:
    """The Anthropic role and content blocks of one non-system message."""
    if message.role == "user":
        return "user", content_blocks(message.content, param=f"{param}.content")
    if message.role == "assistant":
        return "assistant", _assistant_blocks(message, param=param)
    if message.role == "tool":
        return "user", [_tool_result_block(message, param=param)]
    raise errors.InvalidRequest(
        "legacy 'function' messages are not supported by Anthropic; use tools and 'tool' "
        "messages", param=f"{param}.role")


def _system(parts: list[Json]) -> str | list[Json]:
    """Joined system text, or text blocks when a part asks for prompt caching."""
    if any("cache_control" in p for p in parts):
        return parts
    return "\n\n".join(p["text"] for p in parts)


def _finish_turn(turn: Json) -> Json:
    blocks: list[Json] = turn["content"]
    if turn["role"] == "user":
        # Anthropic wants a user turn's tool results before anything else in it (stable sort).
        blocks.sort(key=lambda b: b["type"] != "tool_result")
    if len(blocks) == 1 and blocks[0].keys() == {"type", "text"}:
        turn["content"] = blocks[0]["text"]
    return turn


def translate_messages(messages: list[Message]) -> tuple[str | list[Json] | None, list[Json]]:
    """(``system``, ``messages``): system and developer text lifted out, consecutive turns of
    one role merged (Anthropic requires alternation), tool results as user turns; a turn left
    empty is a 400 (``base.merged_turns``: Anthropic refuses empty messages too)."""
    system: list[Json] = []
    translated: list[tuple[int, str, list[Json]]] = []
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if message.role in ("system", "developer"):
            system.extend(b for b in content_blocks(message.content, param=f"{param}.content")
                          if b["type"] == "text")
            continue
        translated.append((i, *_turn(message, param=param)))
    turns = merged_turns(translated, key="content", reply_role="assistant", who="Anthropic")
    return (_system(system) if system else None), [_finish_turn(t) for t in turns]


def thinking_on(payload: Json) -> bool:
    """Whether a Messages payload turns extended thinking on (``enabled`` or ``adaptive``)."""
    thinking = payload.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


def check_thinking_kept(messages: list[Message]) -> None:
    """With thinking on, Anthropic requires the assistant turn whose tool calls are being
    answered to start with its thinking. That turn begins at the first assistant message after
    the last user message (``tool`` messages are tool results, not user turns): without
    interleaved thinking Claude thinks only there, and its later tool-calling messages in the
    same turn carry none. A 400 before sending when a tool loop is being answered and that
    first assistant message carries no ``thinking_blocks``."""
    if not messages or messages[-1].role != "tool":
        return
    first: int | None = None
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == "user":
            break
        if messages[i].role == "assistant":
            first = i
    if first is None or not messages[first].tool_calls:
        return
    if not (messages[first].model_extra or {}).get("thinking_blocks"):
        raise errors.InvalidRequest(
            "with Anthropic's extended thinking on, the first assistant message of the turn "
            "whose tool calls are being answered must carry its thinking_blocks, as the "
            "gateway returned them (message.thinking_blocks), so that they are sent back first "
            "in that turn; send them, or turn thinking off",
            param=f"messages[{first}].thinking_blocks")


def translate_tools(request: ChatRequest) -> Json:
    """``tools`` and ``tool_choice`` in Anthropic's shape (empty when the client sent no tools)."""
    if not request.tools:
        if request.tool_choice not in (None, "none", "auto"):
            raise errors.InvalidRequest("tool_choice needs tools", param="tool_choice")
        return {}
    tools = []
    for tool in function_tools(request, who=WHO):
        function = tool.function
        entry: Json = {"name": function.name,
                       "input_schema": function.parameters or {"type": "object",
                                                               "properties": {}}}
        if function.description:
            entry["description"] = function.description
        if function.strict:  # Anthropic's strict tool use: inputs valid for the schema
            entry["strict"] = True
        tools.append(entry)
    out: Json = {"tools": tools}
    choice = _tool_choice(request.tool_choice)
    if request.parallel_tool_calls is False and (choice is None or choice["type"] != "none"):
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if choice is not None:
        out["tool_choice"] = choice
    return out


def _tool_choice(choice: str | Json | None) -> Json | None:
    if choice is None:
        return None
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    function = choice.get("function") if isinstance(choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(choice, dict) or choice.get("type") != "function" or \
            not isinstance(name, str):
        raise errors.InvalidRequest(
            "tool_choice must be 'none', 'auto', 'required' or "
            "{\"type\": \"function\", \"function\": {\"name\": ...}}", param="tool_choice")
    return {"type": "tool", "name": name}


def _check_supported(request: ChatRequest, body: Json) -> None:
    refusals.refuse_legacy_functions(body, who=WHO)
    refuse_outputs(body, who=WHO)
    if request.n is not None and request.n > 1:
        raise errors.InvalidRequest("Anthropic models return one choice; n must be 1", param="n")
    if request.temperature is not None and request.temperature > 1:
        raise errors.InvalidRequest(
            "Anthropic models take a temperature between 0 and 1", param="temperature")
    if request.logprobs or request.top_logprobs:
        raise errors.InvalidRequest("Anthropic models do not return logprobs",
                                    param="logprobs" if request.logprobs else "top_logprobs")


def required_schema(request: ChatRequest, *, who: str) -> Json | None:
    """The JSON schema a ``response_format`` asks for (``None`` for text or no format), for
    upstreams whose structured output needs one: ``json_object`` or a format without a schema
    is a 400 (``who`` names the upstream)."""
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        return None
    schema = fmt.json_schema.get("schema") if fmt.json_schema else None
    if fmt.type == "json_object" or not isinstance(schema, dict):
        raise errors.InvalidRequest(
            f"{who} needs a JSON schema for structured output: use response_format "
            "{\"type\": \"json_schema\", \"json_schema\": {\"name\": ..., \"schema\": {...}}}",
            param="response_format")
    return schema


def _output_format(request: ChatRequest, *, params: Json) -> Json:
    """``output_config`` for ``response_format`` (empty for text or no format)."""
    schema = required_schema(request, who="Anthropic models")
    if schema is None:
        return {}
    base = params.get("output_config")
    return {"output_config": {**(base if isinstance(base, dict) else {}),
                              "format": {"type": "json_schema", "schema": schema}}}


def _sampling(request: ChatRequest) -> Json:
    out: Json = {}
    if request.temperature is not None:
        out["temperature"] = request.temperature
    if request.top_p is not None:
        out["top_p"] = request.top_p
    if request.stop is not None:
        out["stop_sequences"] = [request.stop] if isinstance(request.stop, str) else request.stop
    if request.user:
        out["metadata"] = {"user_id": request.user}
    return out


def _smallest(*limits: int | None) -> int | None:
    given = [n for n in limits if n is not None]
    return min(given) if given else None


def _limit(default: int, thinking: object) -> int:
    """The ``max_tokens`` sent for a call that gave none: ``default``, or, when an ``enabled``
    thinking's ``budget_tokens`` is as large, the budget plus ``default`` (room for the answer
    after the thinking)."""
    budget = thinking.get("budget_tokens") if isinstance(thinking, dict) \
        and thinking.get("type") == "enabled" else None
    if isinstance(budget, int) and not isinstance(budget, bool) and budget >= default:
        return budget + default
    return default


def translate_request(call: ChatCall, *, target: Target, max_tokens_default: int,
                      stream: bool) -> Json:
    """The ``POST /v1/messages`` payload for ``call``.

    Layering, lowest first: the target's ``params``, the client's Anthropic-native fields
    (``PASSTHROUGH_FIELDS``), then the translated OpenAI fields. ``max_tokens`` is the client's
    limit (the smaller of ``max_tokens`` and ``max_completion_tokens`` when it sent both: each is
    a limit), else the target's default, else ``max_tokens_default`` (the provider's); a
    default at or below an ``enabled`` thinking's ``budget_tokens`` (which Anthropic refuses:
    ``max_tokens`` must exceed it) is sent as the budget plus that default (``_limit``). With
    ``thinking`` on (from the client or the target), ``check_thinking_kept`` refuses a tool
    loop whose thinking blocks were not sent back.
    """
    request = call.request
    _check_supported(request, call.body)
    system, messages = translate_messages(request.messages)
    payload: Json = {
        "model": target.model,
        "messages": messages,
        "max_tokens": _smallest(request.max_tokens, request.max_completion_tokens),
    }
    if system is not None:
        payload["system"] = system
    payload.update(_sampling(request))
    payload.update(translate_tools(request))
    payload.update(_output_format(request, params=target.params))
    if stream:
        payload["stream"] = True
    passthrough = {k: call.body[k] for k in PASSTHROUGH_FIELDS if k in call.body}
    payload = {**target.params, **passthrough, **payload}
    if payload["max_tokens"] is None:
        payload["max_tokens"] = _limit(target.max_tokens_default or max_tokens_default,
                                       payload.get("thinking"))
    if thinking_on(payload):
        check_thinking_kept(request.messages)
    return payload
