"""Redaction of captured bodies: secret-looking keys and configured patterns never get stored."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"


class Redactor:
    """Deep-copies JSON values, replacing the values of secret keys and the matches of patterns."""

    def __init__(self, *, keys: Iterable[str], patterns: Iterable[str]) -> None:
        self._keys = frozenset(k.lower() for k in keys)
        compiled = [re.compile(p) for p in patterns]
        self._pattern = re.compile("|".join(f"(?:{p.pattern})" for p in compiled)) \
            if compiled else None

    def redact(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: REDACTED if isinstance(k, str) and k.lower() in self._keys
                    else self.redact(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.redact(v) for v in value]
        if isinstance(value, str) and self._pattern is not None:
            return self._pattern.sub(REDACTED, value)
        return value
