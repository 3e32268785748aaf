"""A tool result that reports a failure (Anthropic's ``tool_result`` with ``is_error: true``),
carried through OpenAI's chat form, which has no place for the flag.

``/v1/messages`` translates such a block to a ``tool`` message whose content starts with
``TOOL_ERROR`` (``marked``): an OpenAI-shaped target (OpenAI, Azure, vLLM, TGI, AI21,
Replicate) and Cohere read the marker as text, which says what the flag said. A translator
whose format has a place for the flag takes the marker off (``unmarked``) and sets it instead:
Gemini's ``functionResponse.response.error``, and, for a chat client's own ``tool`` message
that starts with the marker (read the same way; ``/v1/messages`` reaches these natively),
Anthropic's ``is_error`` and Bedrock Converse's ``toolResult.status: "error"`` (on the models
AWS documents it for: ``bedrock_converse.takes_status``).
"""

from __future__ import annotations

from typing import Any

TOOL_ERROR = "[tool error]"
"""What a failed tool result's text starts with in OpenAI's chat form."""


def marked(text: str) -> str:
    """``text`` (a tool's result) marked as a failure."""
    return f"{TOOL_ERROR} {text}" if text else TOOL_ERROR


def _strip(text: str) -> str:
    rest = text[len(TOOL_ERROR):]
    return rest[1:] if rest[:1] in (" ", "\n") else rest


def unmarked(content: Any) -> tuple[Any, bool]:
    """A ``tool`` message's ``content`` without the marker, and whether it had one (a string,
    or the first of a list of content parts when it is a text part)."""
    if isinstance(content, str):
        if content.startswith(TOOL_ERROR):
            return _strip(content), True
        return content, False
    if isinstance(content, list) and content and isinstance(content[0], dict) \
            and content[0].get("type") == "text" and isinstance(content[0].get("text"), str) \
            and content[0]["text"].startswith(TOOL_ERROR):
        first = {**content[0], "text": _strip(content[0]["text"])}
        return [first, *content[1:]] if first["text"] or len(content) == 1 \
            else content[1:], True
    return content, False
