"""Minimal valid outputs for structured-output constraints: JSON schema, regex, choice, grammar.

``instance`` (a JSON schema's instance) and ``regex_sample`` live in ``app.structured``, shared
with the ``mock`` provider; ``grammar_sample`` is the simulator's own.
"""

from __future__ import annotations

from app.structured import instance, regex_sample

__all__ = ["grammar_sample", "instance", "regex_sample"]


def grammar_sample(grammar: str) -> str:
    """A best-effort sentence of a grammar (GBNF/EBNF/Lark): its first double-quoted literal, which
    is the whole language for the common ``root ::= "yes" | "no"`` style."""
    start = grammar.find('"')
    end = grammar.find('"', start + 1) if start >= 0 else -1
    return grammar[start + 1:end] if end > start >= 0 else ""
