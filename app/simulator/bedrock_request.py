"""Validating a Bedrock Converse request body, and counting its prompt and cached prefix.

Errors are 400 ``ValidationException`` with messages in Bedrock's style. The facts kept are
what the answer needs: the token limit, stop sequences, the tool called, the JSON schema of a
structured-output request, whether Claude's thinking is on, the prompt's tokens and the part
before the last ``cachePoint``, and the ``additionalModelResponseFieldPaths`` (JSON Pointers:
an empty or malformed one, or more than 10, is a 400, as Converse answers it). A ``toolSpec``
may hold only ``ToolSpecification``'s members (``TOOL_SPEC_KEYS``; ``strict`` a boolean). The
published limits botocore's model states are checked: ``temperature`` and ``topP`` from 0 to 1,
non-empty ``stopSequences``, a ``cachePoint``'s ``type`` (``default``) and ``ttl`` (``5m`` or
``1h``), ``serviceTier.type``, ``outputConfig`` (``textFormat`` and ``effort``, neither
required: ``EFFORTS``) and ``projectIdentifier``'s pattern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from app.simulator import content
from app.simulator.asgi import SimError
from app.simulator.tools import matching

BLOCK_KEYS = frozenset({"text", "image", "document", "video", "audio", "toolUse", "toolResult",
                        "guardContent", "cachePoint", "reasoningContent", "citationsContent",
                        "searchResult"})
_TOP_KEYS = frozenset({"messages", "system", "inferenceConfig", "toolConfig", "guardrailConfig",
                       "additionalModelRequestFields", "promptVariables",
                       "additionalModelResponseFieldPaths", "requestMetadata",
                       "performanceConfig", "serviceTier", "outputConfig",
                       "projectIdentifier"})
CACHE_TTLS = ("5m", "1h")
"""``CachePointBlock.ttl``'s values (botocore's ``CacheTTL``)."""
MAX_RESPONSE_PATHS = 10
SERVICE_TIERS = ("priority", "default", "flex", "reserved")
"""``ServiceTier.type``'s values (botocore's ``ServiceTierType``)."""
TOOL_SPEC_KEYS = frozenset({"name", "description", "inputSchema", "strict"})
"""``ToolSpecification``'s members (botocore's bedrock-runtime model; AWS's API reference,
``API_runtime_ToolSpecification``): ``strict`` is a boolean asking for structured output on
the tool's input."""


def fail(message: str) -> SimError:
    return SimError(400, message, kind="ValidationException")


@dataclass(frozen=True, slots=True)
class ConverseRequest:
    messages: list[Any]
    max_tokens: int | None
    stop_sequences: tuple[str, ...]
    tool: dict[str, Any] | None
    """The ``toolSpec`` the answer calls, if any (``_called_tool``)."""
    schema: dict[str, Any] | None
    prompt_tokens: int
    cached_prefix: int
    thinks: bool = False
    """Claude's extended thinking asked for (``additionalModelRequestFields.thinking``)."""
    response_paths: tuple[str, ...] = ()
    """``additionalModelResponseFieldPaths``: fields of the model's own response to return."""


def _check_blocks(blocks: Any, where: str) -> None:
    if not isinstance(blocks, list):
        raise fail(f"{where}: expected a list of content blocks")
    for index, block in enumerate(blocks):
        keys = set(block) if isinstance(block, dict) else set()
        if len(keys) != 1 or not keys <= BLOCK_KEYS:
            raise fail(f"{where}.{index}: a content block must set exactly one member of "
                       f"{', '.join(sorted(BLOCK_KEYS))}")
        if "cachePoint" in keys:
            _check_cache_point(block["cachePoint"], f"{where}.{index}.cachePoint")
        use = block.get("toolUse")
        if use is not None and not (isinstance(use, dict) and isinstance(use.get("toolUseId"), str)
                                    and isinstance(use.get("name"), str) and "input" in use):
            raise fail(f"{where}.{index}.toolUse: toolUseId, name and input are required")


def _check_cache_point(point: Any, where: str) -> None:
    """``CachePointBlock``: ``type`` ``default``, an optional ``ttl`` of ``5m`` or ``1h``."""
    if not isinstance(point, dict) or point.get("type") != "default":
        raise fail(f"{where}.type: must be default")
    unknown = sorted(set(point) - {"type", "ttl"})
    if unknown:
        raise fail(f"Unknown field(s) in {where}: {', '.join(unknown)}")
    if "ttl" in point and point["ttl"] not in CACHE_TTLS:
        raise fail(f"{where}.ttl: must be one of 5m, 1h")


def _check_messages(messages: Any) -> list[Any]:
    if not isinstance(messages, list) or not messages:
        raise fail("The model returned the following errors: messages: at least one message "
                   "is required")
    previous = None
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise fail(f"messages.{index}.role: must be user or assistant")
        if index == 0 and role != "user":
            raise fail("A conversation must start with a user message. Try again with a "
                       "conversation that starts with a user message.")
        if role == previous:
            raise fail("A conversation must alternate between user and assistant roles. Make "
                       "sure the conversation alternates between user and assistant roles and "
                       "try again.")
        previous = role
        _check_blocks(message.get("content"), f"messages.{index}.content")
    return messages


def _inference(config: Any) -> tuple[int | None, tuple[str, ...]]:
    if config is None:
        return None, ()
    if not isinstance(config, dict):
        raise fail("inferenceConfig: expected an object")
    limit = config.get("maxTokens")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 1):
        raise fail("inferenceConfig.maxTokens: must be an integer of at least 1")
    for key in ("temperature", "topP"):  # both 0 to 1 (InferenceConfiguration)
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or not 0 <= value <= 1):
            raise fail(f"1 validation error detected: Value '{value}' at "
                       f"'inferenceConfig.{key}' failed to satisfy constraint: Member must "
                       "have value less than or equal to 1")
    stops = config.get("stopSequences") or []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise fail("inferenceConfig.stopSequences: expected a list of strings")
    if not all(stops):
        raise fail("1 validation error detected: Value at 'inferenceConfig.stopSequences' "
                   "failed to satisfy constraint: Member must have length greater than or "
                   "equal to 1")
    return limit, tuple(stops)


def _check_service_tier(tier: Any) -> None:
    if tier is not None and not (isinstance(tier, dict) and set(tier) == {"type"}
                                 and tier["type"] in SERVICE_TIERS):
        raise fail(f"serviceTier.type: must be one of {', '.join(SERVICE_TIERS)}")


def _called_tool(config: Any, messages: list[Any]) -> dict[str, Any] | None:
    """The ``toolSpec`` the answer calls (``app.simulator.tools``' rule): the one
    ``toolChoice.tool`` names; under ``any``, or ``auto`` (also when ``toolChoice`` is absent)
    unless the last message carries a ``toolResult``, the one best matching the last user text."""
    if config is None:
        if any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"]):
            raise fail("The toolConfig field must be defined when using toolUse and toolResult "
                       "content blocks.")
        return None
    tools = config.get("tools") if isinstance(config, dict) else None
    if not isinstance(tools, list) or not tools:
        raise fail("toolConfig.tools: at least one tool is required")
    specs = []
    for index, tool in enumerate(tools):
        spec = tool.get("toolSpec") if isinstance(tool, dict) else None
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) \
                or not isinstance((spec.get("inputSchema") or {}).get("json"), dict):
            raise fail(f"toolConfig.tools.{index}.toolSpec: name and inputSchema.json are "
                       "required")
        unknown = sorted(set(spec) - TOOL_SPEC_KEYS)
        if unknown:
            raise fail(f"Unknown field(s) in toolConfig.tools.{index}.toolSpec: "
                       f"{', '.join(unknown)}")
        if "strict" in spec and not isinstance(spec["strict"], bool):
            raise fail(f"toolConfig.tools.{index}.toolSpec.strict: expected a boolean")
        specs.append(spec)
    choice = config.get("toolChoice")
    if isinstance(choice, dict) and "tool" in choice:
        name = (choice.get("tool") or {}).get("name")
        for spec in specs:
            if spec["name"] == name:
                return spec
        raise fail(f"toolConfig.toolChoice.tool.name: no tool named {name!r}")
    forced = isinstance(choice, dict) and "any" in choice
    if not forced and any("toolResult" in block for block in messages[-1]["content"]):
        return None
    return matching(specs, content.last_user_text(messages))


EFFORTS = ("low", "medium", "high", "xhigh", "max")
"""``OutputConfig.effort``'s supported values (botocore's model documents them)."""
_PROJECT = re.compile(r"[a-zA-Z0-9_-]+|arn:aws(|-us-gov|-cn|-iso|-iso-b|-iso-f|-eusc):bedrock:"
                      r"[0-9a-z-]{1,20}:[0-9]{12}:project/[a-zA-Z0-9_-]+")
"""``projectIdentifier``'s pattern (botocore's model; 1 to 2048 characters)."""


def _check_project(project: Any) -> None:
    if project is not None and not (isinstance(project, str) and len(project) <= 2048
                                    and _PROJECT.fullmatch(project)):
        raise fail("1 validation error detected: Value at 'projectIdentifier' failed to "
                   "satisfy constraint: Member must satisfy regular expression pattern")


def _schema(config: Any) -> dict[str, Any] | None:
    """The JSON schema of ``outputConfig.textFormat`` (None without one). ``OutputConfig`` has
    no required member: ``effort`` alone is valid."""
    if config is None:
        return None
    if not isinstance(config, dict) or set(config) - {"textFormat", "effort"}:
        raise fail("outputConfig: only textFormat and effort are allowed")
    effort = config.get("effort")
    if effort is not None and effort not in EFFORTS:
        raise fail(f"outputConfig.effort: must be one of {', '.join(EFFORTS)}")
    if "textFormat" not in config:
        return None
    text_format = config.get("textFormat")
    if not isinstance(text_format, dict) or text_format.get("type") != "json_schema":
        raise fail("outputConfig.textFormat.type: must be json_schema")
    raw = ((text_format.get("structure") or {}).get("jsonSchema") or {}).get("schema")
    try:
        schema = orjson.loads(raw) if isinstance(raw, str) else None
    except orjson.JSONDecodeError:
        schema = None
    if not isinstance(schema, dict):
        raise fail("outputConfig.textFormat.structure.jsonSchema.schema: must be a JSON schema "
                   "serialized as a string")
    return schema


def _thinks(fields: Any) -> bool:
    """Whether ``additionalModelRequestFields`` turns Claude's thinking on (``thinking.type``
    ``enabled`` with an integer ``budget_tokens``, or ``adaptive``; ``disabled`` is off)."""
    thinking = fields.get("thinking") if isinstance(fields, dict) else None
    if thinking is None:
        return False
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    budget = thinking.get("budget_tokens") if isinstance(thinking, dict) else None
    if kind == "disabled":
        return False
    if kind == "adaptive" or (kind == "enabled" and isinstance(budget, int)):
        return True
    raise fail("The model returned the following errors: thinking.type: must be enabled (with "
               "an integer budget_tokens), adaptive or disabled")


def count_prompt(system: Any, messages: list[Any]) -> tuple[int, int]:
    """(prompt tokens, tokens up to the last ``cachePoint``)."""
    total = prefix = 0
    segments = ([system] if system else []) + [m["content"] for m in messages]
    for segment in segments:
        total += content.MESSAGE_OVERHEAD_TOKENS
        for block in segment:
            if "cachePoint" in block:
                prefix = total
            elif isinstance(block.get("text"), str):
                total += content.count_tokens(block["text"])
            elif isinstance(block.get("toolResult"), dict):
                total += content.count_tokens(content.text_of(block["toolResult"].get("content")))
    return total, prefix


def _response_paths(paths: Any) -> tuple[str, ...]:
    if paths is None:
        return ()
    if not isinstance(paths, list) or not all(
            isinstance(p, str) and p.startswith("/") and len(p) > 1 for p in paths):
        raise fail("additionalModelResponseFieldPaths: each path must be a JSON Pointer "
                   "(a non-empty string starting with '/')")
    if len(paths) > MAX_RESPONSE_PATHS:
        raise fail("1 validation error detected: Value at 'additionalModelResponseFieldPaths' "
                   "failed to satisfy constraint: Member must have length less than or equal "
                   f"to {MAX_RESPONSE_PATHS}")
    return tuple(paths)


def read_converse(body: dict[str, Any]) -> ConverseRequest:
    """Validate ``body`` as Converse does; the facts the simulator needs."""
    unknown = sorted(set(body) - _TOP_KEYS)
    if unknown:
        raise fail(f"Unknown field(s) in the request: {', '.join(unknown)}")
    messages = _check_messages(body.get("messages"))
    system = body.get("system")
    if system is not None:
        _check_blocks(system, "system")
    limit, stops = _inference(body.get("inferenceConfig"))
    _check_service_tier(body.get("serviceTier"))
    _check_project(body.get("projectIdentifier"))
    tool = _called_tool(body.get("toolConfig"), messages)
    prompt, prefix = count_prompt(system, messages)
    return ConverseRequest(messages=messages, max_tokens=limit, stop_sequences=stops, tool=tool,
                           schema=_schema(body.get("outputConfig")), prompt_tokens=prompt,
                           cached_prefix=prefix,
                           thinks=_thinks(body.get("additionalModelRequestFields")),
                           response_paths=_response_paths(
                               body.get("additionalModelResponseFieldPaths")))
