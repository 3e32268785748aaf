"""Redaction of captured bodies: secret-looking keys and configured patterns never get stored."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from app.calllog.record import MAX_BODY_DEPTH, TOO_DEEP

REDACTED = "[redacted]"


class Redactor:
    """Deep-copies JSON values, replacing the values of secret keys and the matches of patterns.

    The copy stops at ``MAX_BODY_DEPTH`` levels (the value itself is level 1): an object or array
    below that is ``TOO_DEEP``, as ``CallRecord.to_row`` would store it anyway. The recursion is
    bounded by that depth, so no body, however deep, can reach Python's recursion limit here."""

    def __init__(self, *, keys: Iterable[str], patterns: Iterable[str]) -> None:
        self._keys = frozenset(k.lower() for k in keys)
        compiled = [re.compile(p) for p in patterns]
        self._pattern = re.compile("|".join(f"(?:{p.pattern})" for p in compiled)) \
            if compiled else None

    def redact(self, value: Any, *, depth: int = MAX_BODY_DEPTH) -> Any:
        """The redacted copy of ``value``, containers deeper than ``depth`` levels cut."""
        if isinstance(value, dict):
            if depth <= 0:
                return TOO_DEEP
            out: dict[Any, Any] = {}
            keys = self._keys
            for k, v in value.items():  # a loop, not a comprehension: one frame per level
                out[k] = REDACTED if isinstance(k, str) and k.lower() in keys \
                    else self.redact(v, depth=depth - 1)
            return out
        if isinstance(value, list):
            if depth <= 0:
                return TOO_DEEP
            items: list[Any] = []
            for v in value:
                items.append(self.redact(v, depth=depth - 1))
            return items
        if isinstance(value, str) and self._pattern is not None:
            return self._pattern.sub(REDACTED, value)
        return value
