"""Redaction of captured bodies: secret-looking keys, configured patterns and the gateway's own
keys never get stored."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from app.calllog.record import MAX_BODY_DEPTH, TOO_DEEP

REDACTED = "[redacted]"


class Redactor:
    """Deep-copies JSON values, replacing the values of secret keys, the matches of patterns and
    the gateway's own keys.

    ``own`` (the pipeline's ``app.scrub.OwnKeys``) scrubs the gateway's own keys from every
    string of the body, object keys included: anything shaped as a virtual key becomes
    ``sk-sb-[redacted]``, the master key ``[redacted]``, as in the row's other columns
    (``Pipeline.seal``). The ``patterns`` apply to object keys too. Bodies are only walked when
    they are captured (``calllog.capture_bodies``), so none of this costs a call otherwise.

    The copy stops at ``MAX_BODY_DEPTH`` levels (the value itself is level 1): an object or array
    below that is ``TOO_DEEP``, as ``CallRecord.to_row`` would store it anyway. The recursion is
    bounded by that depth, so no body, however deep, can reach Python's recursion limit here."""

    def __init__(self, *, keys: Iterable[str], patterns: Iterable[str],
                 own: Callable[[str], str] | None = None) -> None:
        self._keys = frozenset(k.lower() for k in keys)
        compiled = [re.compile(p) for p in patterns]
        self._pattern = re.compile("|".join(f"(?:{p.pattern})" for p in compiled)) \
            if compiled else None
        self._own = own
        self._scrubs = self._pattern is not None or own is not None

    def text(self, value: str) -> str:
        """``value`` with the gateway's own keys and the patterns' matches replaced."""
        if self._own is not None:
            value = self._own(value)
        if self._pattern is not None:
            value = self._pattern.sub(REDACTED, value)
        return value

    def redact(self, value: Any, *, depth: int = MAX_BODY_DEPTH) -> Any:
        """The redacted copy of ``value``, containers deeper than ``depth`` levels cut."""
        if isinstance(value, dict):
            if depth <= 0:
                return TOO_DEEP
            out: dict[Any, Any] = {}
            keys = self._keys
            scrubs = self._scrubs
            for k, v in value.items():  # a loop, not a comprehension: one frame per level
                named = isinstance(k, str)
                out[self.text(k) if named and scrubs else k] = \
                    REDACTED if named and k.lower() in keys \
                    else self.redact(v, depth=depth - 1)
            return out
        if isinstance(value, list):
            if depth <= 0:
                return TOO_DEEP
            items: list[Any] = []
            for v in value:
                items.append(self.redact(v, depth=depth - 1))
            return items
        if isinstance(value, str) and self._scrubs:
            return self.text(value)
        return value
