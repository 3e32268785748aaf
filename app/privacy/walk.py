"""The text parts of request and answer bodies, found and rewritten.

A request body is walked whole (messages and their content parts, tool calls' arguments and
tool results, a completion's ``prompt``, an embedding's ``input``, an Anthropic body's
``system`` and blocks, ``user`` and ``metadata`` too: whatever the gateway forwards), except
the values of ``SKIP_KEYS`` (names, ids and roles the gateway and providers read, base64
payloads) and ``data:`` URLs. Rewriting copies only the containers on the way to a changed
string; the rest is shared with the original.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

SKIP_KEYS = frozenset({
    "model", "role", "type", "id", "tool_call_id", "tool_use_id", "signature", "media_type",
    "object", "finish_reason", "stop_reason", "index", "encoding_format", "data",
    "response_format", "tool_choice", "service_tier", "reasoning_effort", "cache_control",
})
_MAX_DEPTH = 256


def texts(node: Any, depth: int = 0) -> Iterator[str]:
    """Every text part of ``node``, in document order."""
    if isinstance(node, str):
        if not node.startswith("data:"):
            yield node
    elif isinstance(node, dict):
        if depth < _MAX_DEPTH:
            for key, value in node.items():
                if key not in SKIP_KEYS:
                    yield from texts(value, depth + 1)
    elif isinstance(node, list | tuple) and depth < _MAX_DEPTH:
        for item in node:
            yield from texts(item, depth + 1)


def rewrite(node: Any, change: Callable[[str], str], depth: int = 0) -> Any:
    """``node`` with each text part replaced by ``change(text)`` (walked as ``texts`` does);
    ``node`` itself when nothing changed."""
    if isinstance(node, str):
        return node if node.startswith("data:") else change(node)
    if isinstance(node, dict):
        if depth >= _MAX_DEPTH:
            return node
        out: dict[str, Any] | None = None
        for key, value in node.items():
            if key in SKIP_KEYS:
                continue
            new = rewrite(value, change, depth + 1)
            if new is not value:
                if out is None:
                    out = dict(node)
                out[key] = new
        return node if out is None else out
    if isinstance(node, list | tuple) and depth < _MAX_DEPTH:
        items: list[Any] | None = None
        for i, value in enumerate(node):
            new = rewrite(value, change, depth + 1)
            if new is not value:
                if items is None:
                    items = list(node)
                items[i] = new
        if items is None:
            return node
        return tuple(items) if isinstance(node, tuple) else items
    return node
