"""Which tool a simulated answer calls, the one rule every dialect follows.

A request that offers tools gets a tool call unless its tool choice rules one out (OpenAI's
``"none"``, Anthropic's ``none``, Cohere's ``NONE``, Gemini's ``NONE``) or, when the model is
left to decide (OpenAI's ``"auto"``, Anthropic's ``auto``, Cohere's and Bedrock's default,
Gemini's ``AUTO``), its last message is a tool result: then the answer is text, so agent loops
end. The tool called is the one the choice names, else the one whose name and description share
the most words with the last user message, the first on a tie (``app.structured.pick_tool``, as
the ``mock`` provider picks).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.structured import pick_tool


def matching(functions: Sequence[dict[str, Any]], text: str) -> dict[str, Any]:
    """The function (a dict with ``name`` and an optional ``description``) whose name and
    description best match ``text``; the first on a tie."""
    pairs = [(str(f["name"]), str(f.get("description") or "")) for f in functions]
    return functions[pick_tool(pairs, text)]
