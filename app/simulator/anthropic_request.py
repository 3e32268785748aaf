"""Validating an Anthropic Messages request, and counting its prompt and cached prefix.

Errors are 400 ``invalid_request_error`` with Anthropic-style messages naming the field path
(``max_tokens: Field required``, ``messages.0.content.1.type: ...``). Extended thinking
(``thinking``) is validated as Anthropic does, and so are the thinking blocks sent back with it
(``check_thinking``).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

from app.simulator import content
from app.simulator.asgi import SimError
from app.simulator.tools import matching
from app.usage import estimate_tokens

BLOCK_TYPES = frozenset({"text", "image", "document", "tool_use", "tool_result", "thinking",
                         "redacted_thinking", "search_result"})
_ROLES = ("user", "assistant", "system")
_IMAGES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
"""The base64 image types Anthropic takes (``image/jpg`` is a 400 naming these)."""
_REQUIRED_KEYS = {"text": ("text",), "image": ("source",), "document": ("source",),
                  "tool_use": ("id", "name", "input"), "tool_result": ("tool_use_id",)}


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    """The parts of a Messages request the simulator acts on.

    ``cached_prefix``: prompt tokens up to and including the last ``cache_control`` block (0
    when nothing is marked); ``hour_prefix`` the part of it up to the last block marked
    ``ttl: 1h`` (Anthropic requires 1-hour marks before 5-minute ones). ``tool``: the tool the
    answer calls, if any. ``schema``: the JSON schema ``output_config.format`` asks the answer
    to follow, if any. ``thinks``: extended thinking is on (``check_thinking``).
    """

    model: str
    max_tokens: int
    messages: list[Any]
    stop_sequences: tuple[str, ...]
    stream: bool
    prompt_tokens: int
    cached_prefix: int
    tool: dict[str, Any] | None
    schema: dict[str, Any] | None = None
    hour_prefix: int = 0
    thinks: bool = False
    """Extended thinking is on (``thinking``: ``enabled`` with a budget, or ``adaptive``)."""


def _fail(message: str) -> SimError:
    return SimError(400, message, kind="invalid_request_error")


def _check_blocks(blocks: Any, path: str) -> None:
    if isinstance(blocks, str):
        return
    if not isinstance(blocks, list):
        raise _fail(f"{path}: Input should be a valid string or a list of content blocks")
    for index, block in enumerate(blocks):
        where = f"{path}.{index}"
        if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
            kind = block.get("type") if isinstance(block, dict) else None
            raise _fail(f"{where}.type: Input tag {kind!r} found using 'type' does not match any "
                        f"of the expected tags: {', '.join(sorted(BLOCK_TYPES))}")
        for key in _REQUIRED_KEYS.get(block["type"], ()):
            if key not in block:
                raise _fail(f"{where}.{key}: Field required")
        source = block.get("source")
        if block["type"] == "image" and isinstance(source, dict) \
                and source.get("type") == "base64" and source.get("media_type") not in _IMAGES:
            raise _fail(f"{where}.image.source.base64.media_type: Input should be "
                        "'image/jpeg', 'image/png', 'image/gif' or 'image/webp'")


def _check_messages(messages: Any) -> list[Any]:
    if not isinstance(messages, list):
        raise _fail("messages: Field required" if messages is None
                    else "messages: Input should be a valid list")
    if not messages:
        raise _fail("messages: at least one message is required")
    for index, message in enumerate(messages):
        # Current SDKs also type ``system`` messages inside ``messages``.
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise _fail(f"messages.{index}.role: Input should be 'user', 'assistant' or "
                        "'system'")
        if "content" not in message:
            raise _fail(f"messages.{index}.content: Field required")
        _check_blocks(message["content"], f"messages.{index}.content")
    return messages


def _called_tool(body: dict[str, Any], messages: list[Any]) -> dict[str, Any] | None:
    """The tool the answer calls (``app.simulator.tools``' rule): the one ``tool_choice``
    ``tool`` names; under ``any``, or ``auto`` (also when ``tool_choice`` is absent) unless the
    last message carries a ``tool_result``, the custom tool best matching the last user message
    (``auto`` with only Anthropic's own versioned tools answers text)."""
    raw, choice = body.get("tools"), body.get("tool_choice")
    tools: list[dict[str, Any]] = []
    for tool in raw if isinstance(raw, list) else ():
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise _fail("tools: Input should be a list of tools, each with a name")
        tools.append(tool)
    if raw is not None and not isinstance(raw, list):
        raise _fail("tools: Input should be a valid list")
    if choice is not None and (not isinstance(choice, dict)
                               or choice.get("type") not in ("auto", "any", "tool", "none")):
        raise _fail("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    kind = "auto" if choice is None else choice["type"]
    # Anthropic's versioned tools (web_search_20250305, bash_20250124...) run at Anthropic or
    # have no schema here: the model's own pick is among the custom ones.
    custom = [tool for tool in tools if tool.get("type") in (None, "custom")]
    if kind == "none" or (kind == "auto" and (not custom or _answers_tool(messages[-1]))):
        return None
    if not tools:
        raise _fail("tool_choice: may only be specified while providing tools.")
    if kind == "tool":
        name = choice.get("name") if choice is not None else None
        for tool in tools:
            if tool["name"] == name:
                return tool
        raise _fail(f"tool_choice.name: Tool '{name}' not found in tools")
    return matching(custom or tools, content.last_user_text(messages))


def _answers_tool(message: dict[str, Any]) -> bool:
    """Whether ``message`` carries a ``tool_result`` block (the model's turn after a call)."""
    blocks = message.get("content")
    return isinstance(blocks, list) and any(
        isinstance(block, dict) and block.get("type") == "tool_result" for block in blocks)


def _output_schema(config: Any) -> dict[str, Any] | None:
    """The schema of ``output_config.format`` (structured outputs: ``{"type": "json_schema",
    "schema": {...}}``, both required), or None when no format is asked for."""
    if config is None:
        return None
    if not isinstance(config, dict):
        raise _fail("output_config: Input should be a valid dictionary")
    fmt = config.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise _fail("output_config.format.type: Input should be 'json_schema'")
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        raise _fail("output_config.format.schema: Field required" if schema is None
                    else "output_config.format.schema: Input should be a valid dictionary")
    return schema


def _has_cache_control(block: Any) -> bool:
    return isinstance(block, dict) and block.get("cache_control") is not None


def count_prompt(system: Any, messages: list[Any], tools: Any) -> tuple[int, int, int]:
    """(prompt tokens, cached prefix, its 1-hour part): ``content.prompt_tokens``' count,
    walked block by block to find where the last ``cache_control`` mark, and the last one with
    ``ttl: 1h``, end."""
    total = prefix = hour = 0
    marked = isinstance(tools, list) and any(_has_cache_control(tool) for tool in tools)
    segments: list[Any] = []
    if system:
        segments.append(system)
    segments.extend(message.get("content") for message in messages)
    for segment in segments:
        total += content.MESSAGE_OVERHEAD_TOKENS
        for block in segment if isinstance(segment, list) else [segment]:
            total += estimate_tokens(content.text_of([block] if isinstance(block, dict)
                                                     else block))
            if _has_cache_control(block):
                prefix, marked = total, True
                if isinstance(block["cache_control"], dict) \
                        and block["cache_control"].get("ttl") == "1h":
                    hour = total
    return total, prefix if marked else 0, hour


def thinking_signature(thinking: str) -> str:
    """The signature the simulator gives a thinking block: opaque to clients, and tied to the
    block's text, so a block sent back changed (or with another's signature) is refused."""
    digest = hashlib.sha256(b"sim-thinking\0" + thinking.encode()).digest()
    return base64.b64encode(b"sim-sig:" + digest).decode()


def _thinks(body: dict[str, Any], max_tokens: int) -> bool:
    """Whether ``thinking`` turns extended thinking on, validated as Anthropic does: ``enabled``
    with an integer ``budget_tokens`` of at least 1024 and below ``max_tokens``, ``adaptive``,
    or ``disabled``."""
    thinking = body.get("thinking")
    if thinking is None:
        return False
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "disabled":
        return False
    if kind == "adaptive":
        return True
    if kind != "enabled":
        raise _fail("thinking.type: Input should be 'enabled', 'adaptive' or 'disabled'")
    budget = thinking.get("budget_tokens")
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise _fail("thinking.enabled.budget_tokens: Field required")
    if budget < 1024:
        raise _fail("thinking.enabled.budget_tokens: Input should be greater than or equal to "
                    "1024")
    if max_tokens <= budget:
        raise _fail("`max_tokens` must be greater than `thinking.budget_tokens`. Please consult "
                    "our documentation at https://docs.claude.com/en/docs/build-with-claude/"
                    "extended-thinking#max-tokens-and-context-window-size")
    return True


def turn_start(messages: list[Any]) -> int | None:
    """The index of the first assistant message of the current assistant turn: the first one
    after the last user message that is not only tool results (None when there is none)."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if message.get("role") == "user" and not only_tool_results(message):
            following = index + 1
            return following if following < len(messages) else None
    return None


def only_tool_results(message: dict[str, Any]) -> bool:
    """Whether a user message carries tool results and nothing else (not a user turn)."""
    blocks = message.get("content")
    return isinstance(blocks, list) and bool(blocks) and all(
        isinstance(block, dict) and block.get("type") == "tool_result" for block in blocks)


def check_thinking(messages: list[Any]) -> None:
    """With thinking on, Anthropic's rules for the thinking blocks sent back: when the last
    message answers tool calls, the assistant turn they belong to must start with a
    ``thinking`` or ``redacted_thinking`` block; that is its first assistant message after the
    last user message that is not only tool results (Claude thinks once per turn, so its later
    tool-calling messages carry none). Every ``thinking`` block must carry the signature it
    was given (``thinking_signature``)."""
    for index, message in enumerate(messages):
        blocks = message.get("content")
        for position, block in enumerate(blocks if isinstance(blocks, list) else ()):
            if isinstance(block, dict) and block.get("type") == "thinking" \
                    and block.get("signature") != thinking_signature(
                        str(block.get("thinking", ""))):
                raise _fail(f"messages.{index}.content.{position}: Invalid `signature` in "
                            "`thinking` block")
    if not messages or not _answers_tool(messages[-1]):
        return
    start = turn_start(messages)
    if start is None or messages[start].get("role") != "assistant":
        return
    blocks = messages[start].get("content")
    first = (blocks[0].get("type") if isinstance(blocks, list) and blocks
             and isinstance(blocks[0], dict) else "text")
    if first not in ("thinking", "redacted_thinking"):
        raise _fail(
            f"messages.{start}.content.0.type: Expected `thinking` or "
            f"`redacted_thinking`, but found `{first}`. When `thinking` is enabled, a final "
            "`assistant` message must start with a thinking block (preceeding the lastmost set "
            "of `tool_use` and `tool_result` blocks). We recommend you include thinking blocks "
            "from previous turns. To avoid this requirement, disable `thinking`. Please consult "
            "our documentation at https://docs.claude.com/en/docs/build-with-claude/"
            "extended-thinking")


def read_request(body: dict[str, Any]) -> MessagesRequest:
    """Validate ``body`` as Anthropic does; the facts the simulator needs."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _fail("model: Field required")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise _fail("max_tokens: Field required")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _fail("max_tokens: Input should be a valid integer greater than or equal to 1")
    messages = _check_messages(body.get("messages"))
    system = body.get("system")
    if system is not None:
        _check_blocks(system, "system")
    stops = body.get("stop_sequences") or []
    if not isinstance(stops, list) or not all(isinstance(stop, str) for stop in stops):
        raise _fail("stop_sequences: Input should be a valid list of strings")
    thinks = _thinks(body, max_tokens)
    if thinks:
        check_thinking(messages)
    tool = _called_tool(body, messages)
    schema = _output_schema(body.get("output_config"))
    prompt, prefix, hour = count_prompt(system, messages, body.get("tools"))
    return MessagesRequest(model=model, max_tokens=max_tokens, messages=messages,
                           stop_sequences=tuple(stops), stream=body.get("stream") is True,
                           prompt_tokens=prompt, cached_prefix=prefix, tool=tool,
                           schema=schema, hour_prefix=hour, thinks=thinks)
