"""Validating Cohere v2 chat and embed requests, as Cohere's API does.

Errors are 400s in Cohere's shape (``{"id", "message"}``, ``app.simulator.errors``) with messages
naming the field. The checks follow the API reference's request schemas: required fields, the
message roles and their required fields, enum values, and the documented ranges (``temperature``
0..1, ``p`` 0.01..0.99, penalties 0..1, at most 5 ``stop_sequences``, at most 96 ``texts``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from app.simulator import content
from app.simulator.asgi import SimError
from app.simulator.tools import matching
from app.usage import estimate_tokens

ROLES = ("user", "assistant", "system", "tool")
USER_PARTS = ("text", "image_url")
INPUT_TYPES = ("search_document", "search_query", "classification", "clustering", "image")
EMBEDDING_TYPES = ("float", "int8", "uint8", "binary", "ubinary", "base64")
OUTPUT_DIMENSIONS = (256, 512, 1024, 1536)
MAX_TEXTS = 96
_FIXED_SIZE = re.compile(r"embed-(?:english|multilingual)(?:-light)?-v[1-3]\b")
"""Embed v3 and older: ``output_dimension`` is "only available for embed-v4 and newer"."""


def fail(message: str) -> SimError:
    return SimError(400, f"invalid request: {message}")


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """The parts of a v2 chat request the simulator acts on."""

    model: str
    messages: list[Any]
    max_tokens: int | None
    stop_sequences: tuple[str, ...]
    stream: bool
    tool: dict[str, Any] | None
    """The function the answer calls, if any (``_tool``)."""
    json_schema: dict[str, Any] | None
    json_mode: bool
    logprobs: bool
    prompt_tokens: int


def _number(body: dict[str, Any], key: str, low: float, high: float) -> None:
    value = body.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise fail(f"{key} must be a number between {low} and {high}")


def _check_parts(parts: Any, where: str, allowed: tuple[str, ...]) -> None:
    if isinstance(parts, str):
        return
    if not isinstance(parts, list):
        raise fail(f"{where} must be a string or a list of content blocks")
    for i, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in allowed:
            raise fail(f"{where}[{i}].type must be one of {', '.join(allowed)}")
        if kind == "text" and not isinstance(part.get("text"), str):
            raise fail(f"{where}[{i}].text is required")
        if kind == "image_url":
            image = part.get("image_url")
            if not isinstance(image, dict) or not isinstance(image.get("url"), str):
                raise fail(f"{where}[{i}].image_url.url is required")


def _check_message(message: Any, i: int) -> None:
    where = f"messages[{i}]"
    role = message.get("role") if isinstance(message, dict) else None
    if role not in ROLES:
        raise fail(f"{where}.role must be one of {', '.join(ROLES)}")
    if role == "assistant":
        if "content" in message:
            _check_parts(message["content"], f"{where}.content", ("text", "thinking"))
        for j, call in enumerate(message.get("tool_calls") or ()):
            if not isinstance(call, dict) or not isinstance(call.get("id"), str) \
                    or call.get("type") != "function":
                raise fail(f"{where}.tool_calls[{j}] needs an id and type 'function'")
        return
    if "content" not in message:
        raise fail(f"{where}.content is required")
    if role == "tool":
        if not isinstance(message.get("tool_call_id"), str):
            raise fail(f"{where}.tool_call_id is required")
        _check_parts(message["content"], f"{where}.content", ("text", "document"))
    else:
        _check_parts(message["content"], f"{where}.content",
                     USER_PARTS if role == "user" else ("text",))


def _tool(body: dict[str, Any], messages: list[Any]) -> dict[str, Any] | None:
    """The function the answer calls (``app.simulator.tools``' rule): with ``tools`` and no
    ``tool_choice`` (the model decides) unless the last message is a ``tool`` result, or with
    ``REQUIRED``, the tool best matching the last user message; none with ``NONE``."""
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise fail("tools must be a list")
        for i, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str) \
                    or not isinstance(function.get("parameters"), dict):
                raise fail(f"tools[{i}].function needs a name and parameters")
    choice = body.get("tool_choice")
    if choice is not None and choice not in ("REQUIRED", "NONE"):
        raise fail("tool_choice must be one of REQUIRED, NONE")
    if choice == "REQUIRED" and not tools:
        raise fail("tool_choice REQUIRED needs tools")
    if choice == "NONE" or not tools or (choice is None and messages[-1].get("role") == "tool"):
        return None
    return matching([tool["function"] for tool in tools], content.last_user_text(messages))


def _format(body: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
    fmt = body.get("response_format")
    if fmt is None:
        return False, None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind not in ("text", "json_object"):
        raise fail("response_format.type must be one of text, json_object")
    if kind == "text":
        if "json_schema" in fmt:
            raise fail("response_format.json_schema must not be set when type is text")
        return False, None
    if body.get("tools") or body.get("documents"):
        raise fail("response_format is not supported with tools or documents")
    schema = fmt.get("json_schema")
    if schema is not None and not isinstance(schema, dict):
        raise fail("response_format.json_schema must be an object")
    return True, schema


SAFETY_MODES = ("CONTEXTUAL", "STRICT", "OFF")


def _check_extensions(body: dict[str, Any]) -> None:
    """Cohere's own chat fields, as its v2 schema types them: ``safety_mode`` one of
    ``SAFETY_MODES``, ``documents`` a list of strings or objects, ``k`` an integer 0..500,
    ``thinking`` an object whose ``type`` is ``enabled`` or ``disabled`` (``token_budget`` a
    positive integer)."""
    mode = body.get("safety_mode")
    if mode is not None and mode not in SAFETY_MODES:
        raise fail(f"safety_mode must be one of {', '.join(SAFETY_MODES)}")
    documents = body.get("documents")
    if documents is not None and not (isinstance(documents, list) and all(
            isinstance(d, (str, dict)) for d in documents)):
        raise fail("documents must be a list of strings or document objects")
    k = body.get("k")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= 500):
        raise fail("k must be an integer between 0 and 500")
    thinking = body.get("thinking")
    if thinking is not None:
        budget = thinking.get("token_budget") if isinstance(thinking, dict) else None
        if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "disabled") \
                or (budget is not None and (isinstance(budget, bool)
                                            or not isinstance(budget, int) or budget < 1)):
            raise fail("thinking must be {type: enabled|disabled, token_budget: a positive "
                       "integer}")


def read_chat(body: dict[str, Any]) -> ChatRequest:
    """Validate ``body`` as Cohere's ``/v2/chat`` does; the facts the simulator needs."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise fail("model is required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise fail("messages must be a non-empty list")
    for i, message in enumerate(messages):
        _check_message(message, i)
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (isinstance(max_tokens, bool)
                                   or not isinstance(max_tokens, int) or max_tokens < 1):
        raise fail("max_tokens must be a positive integer")
    stops = body.get("stop_sequences") or []
    if not isinstance(stops, list) or len(stops) > 5 \
            or not all(isinstance(s, str) for s in stops):
        raise fail("stop_sequences must be a list of at most 5 strings")
    _number(body, "temperature", 0, 1)
    _number(body, "p", 0.01, 0.99)
    _number(body, "frequency_penalty", 0, 1)
    _number(body, "presence_penalty", 0, 1)
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise fail("seed must be a non-negative integer")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise fail("stream must be a boolean")
    _check_extensions(body)
    json_mode, schema = _format(body)
    prompt = sum(estimate_tokens(content.message_text(m)) + content.MESSAGE_OVERHEAD_TOKENS
                 for m in messages)
    return ChatRequest(model=model, messages=messages, max_tokens=max_tokens,
                       stop_sequences=tuple(stops), stream=stream, tool=_tool(body, messages),
                       json_schema=schema, json_mode=json_mode,
                       logprobs=body.get("logprobs") is True, prompt_tokens=prompt)


@dataclass(frozen=True, slots=True)
class EmbedRequest:
    model: str
    texts: list[str]
    embedding_types: tuple[str, ...]
    dimensions: int | None


def read_embed(body: dict[str, Any]) -> EmbedRequest:
    """Validate ``body`` as Cohere's ``/v2/embed`` does (texts only)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise fail("model is required")
    input_type = body.get("input_type")
    if input_type is None:
        raise fail("input_type is required for embed v3 and later models")
    if input_type not in INPUT_TYPES:
        raise fail(f"input_type must be one of {', '.join(INPUT_TYPES)}")
    texts = body.get("texts")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise fail("texts must be a non-empty list of strings")
    if len(texts) > MAX_TEXTS:
        raise fail(f"texts must contain at most {MAX_TEXTS} items, got {len(texts)}")
    types = body.get("embedding_types") or ["float"]
    if not isinstance(types, list) or not all(t in EMBEDDING_TYPES for t in types):
        raise fail(f"embedding_types must be a list of {', '.join(EMBEDDING_TYPES)}")
    dimensions = body.get("output_dimension")
    if dimensions is not None and _FIXED_SIZE.search(model):
        raise fail(f"output_dimension is only available for embed-v4 and newer models, "
                   f"not {model}")
    if dimensions is not None and dimensions not in OUTPUT_DIMENSIONS:
        raise fail("output_dimension must be one of 256, 512, 1024, 1536")
    truncate = body.get("truncate")
    if truncate is not None and truncate not in ("NONE", "START", "END"):
        raise fail("truncate must be one of NONE, START, END")
    return EmbedRequest(model=model, texts=texts, embedding_types=tuple(dict.fromkeys(types)),
                        dimensions=dimensions)
