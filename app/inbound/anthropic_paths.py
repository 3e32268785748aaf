"""Where each part of a translated Messages request came from, so that the gateway's refusal of
the chat call it became (``ChatRequest``'s validation, which also gates native targets) names
the client's field, not the translation's: ``tools[0].function.name`` is the client's
``tools[0].name``, and chat message 3 (after a system message and a tool result split out of a
turn) is the client's ``messages[1]``.

``Origins`` is filled as ``app.inbound.anthropic.read_request`` translates: for each chat
message, the client's path of what it came from and of each of its parts (a user message's
content parts, an assistant message's tool calls); for each chat tool, the client's index.
``client_error`` rewrites a refusal's ``param`` and the quoted path in its message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from app import errors

_TOP = {"stop": "stop_sequences", "user": "metadata.user_id",
        "parallel_tool_calls": "tool_choice.disable_parallel_tool_use",
        "stream_options": "stream"}
"""Top-level chat parameters whose Messages field is named otherwise."""
_TOOL_TAILS = {".function.name": ".name", ".function.parameters": ".input_schema",
               ".function.description": ".description"}
"""A chat tool's fields -> the Messages tool's (the rest of a chat tool's path is dropped)."""
_CALL_TAILS = {".function.name": ".name", ".function.arguments": ".input", ".id": ".id"}
"""A chat tool call's fields -> the ``tool_use`` block's."""
_TOOL_MESSAGE_TAILS = {".tool_call_id": ".tool_use_id", ".content": ".content"}
"""A ``tool`` message's fields -> the ``tool_result`` block's."""
_INDEXED = re.compile(r"^(messages|tools)\[(\d+)\](.*)$")
_PART = re.compile(r"^\.(content|tool_calls)\[(\d+)\](.*)$")


@dataclass(slots=True)
class Origin:
    """A chat message's source: the client's path (``system``, ``messages[i]``, or a
    ``tool_result`` block's ``messages[i].content[j]``) and its parts' paths, in order."""

    path: str
    parts: tuple[str, ...] = ()
    tool: bool = False
    """A ``tool`` message: its source is a ``tool_result`` block."""


@dataclass(slots=True)
class Origins:
    """The sources of a translated request's chat messages and tools (see the module
    docstring)."""

    messages: list[Origin] = field(default_factory=list)
    tools: list[int] = field(default_factory=list)

    def client_path(self, param: str) -> str:
        """The client's path of the chat call's ``param`` (as ``app.api.wire.parse`` writes
        it); as far as it maps, the rest dropped (a chat field the client never wrote)."""
        if param in _TOP:
            return _TOP[param]
        if param.startswith("tool_choice."):
            return "tool_choice"  # the chat call's shape of it: the client wrote another
        found = _INDEXED.match(param)
        if found is None:
            return param
        kind, index, tail = found.group(1), int(found.group(2)), found.group(3)
        if kind == "tools":
            if index >= len(self.tools):
                return "tools"
            return f"tools[{self.tools[index]}]" + _TOOL_TAILS.get(tail, "")
        if index >= len(self.messages):
            return "messages"
        origin = self.messages[index]
        if origin.tool:
            return origin.path + _TOOL_MESSAGE_TAILS.get(tail, "")
        part = _PART.match(tail)
        if part is not None and int(part.group(2)) < len(origin.parts):
            at = origin.parts[int(part.group(2))]
            return at + _CALL_TAILS.get(part.group(3), "") if part.group(1) == "tool_calls" \
                else at
        if origin.path == "system" or not tail.startswith(".content"):
            return origin.path
        return origin.path + ".content"


def client_error(exc: errors.InvalidRequest, origins: Origins) -> errors.InvalidRequest:
    """``exc`` (the chat call's refusal) naming the client's field: its ``param`` and the path
    its message quotes (``Invalid value for 'tools[0].function.name': ...``)."""
    if exc.param is None:
        return exc
    path = origins.client_path(exc.param)
    if path == exc.param:
        return exc
    message = exc.message.replace(f"'{exc.param}'", f"'{path}'")
    return errors.InvalidRequest(message, param=path, code=exc.code, status=exc.status_code)
