"""What changed between two versions of a template: a unified text diff of the messages and a
field-by-field diff of the rest. Pure.

The text is exact: two versions whose messages differ in any character never diff equal. Each
message is a ``--- role`` (``--- role (name)``) line, then its content split at ``\\n`` only, so
a content ending in a newline ends in an empty line, and ``\\r\\n`` is not ``\\n``. A line that
holds a character a terminal would not show as it is (a carriage return, another control
character, a Unicode line or paragraph separator), or that could be read as something else (one
starting with ``"`` or ``--- ``), is shown as a JSON string (``"line one\\r"``). The other
fields are compared as canonical JSON (keys sorted), as ``content_digest`` compares versions:
``true``, ``1`` and ``1.0`` differ, as they do to the model."""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

import orjson

from app.prompts.model import VersionRecord

_HIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
"""What a line is shown as a JSON string for: a control character other than a tab (``\\r``,
the separators ``str.splitlines`` breaks at), or a Unicode line or paragraph separator."""
_UNESCAPED = re.compile("[\x7f-\x9f\u2028\u2029]")
"""What ``json.dumps(ensure_ascii=False)`` leaves as it is among ``_HIDDEN``."""
_HEADER = "--- "


def shown(line: str) -> str:
    """``line`` as it is, or as a JSON string when it holds a character that would not show
    (``_HIDDEN``) or starts like a quoted line or a message's header. Injective: a line shown
    as it is never starts with ``"`` or ``--- ``, and one quoted always starts with ``"``."""
    if not (_HIDDEN.search(line) or line.startswith(('"', _HEADER))):
        return line
    quoted = json.dumps(line, ensure_ascii=False)
    return _UNESCAPED.sub(lambda m: f"\\u{ord(m.group()):04x}", quoted)


def messages_text(record: VersionRecord) -> list[str]:
    """The messages as lines: a ``--- role`` (``--- role (name)``) line before each content,
    split at ``\\n`` only (see the module docstring)."""
    lines: list[str] = []
    for message in record.spec.messages:
        who = message.role if message.name is None else f"{message.role} ({shown(message.name)})"
        lines.append(f"{_HEADER}{who}")
        lines.extend(shown(line) for line in message.content.split("\n"))
    return lines


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def diff(old: VersionRecord, new: VersionRecord) -> dict[str, Any]:
    """``messages``: a unified diff (text, empty when equal); ``fields``: each other field
    (``variables``, ``model``, ``params``, ``author``, ``note``; variables by name) that differs
    as JSON, as ``{"from": ..., "to": ...}``."""
    tag = f"{old.template_id}"
    text = "\n".join(difflib.unified_diff(messages_text(old), messages_text(new),
                                          fromfile=f"{tag}@v{old.number}",
                                          tofile=f"{tag}@v{new.number}", lineterm=""))
    fields: dict[str, Any] = {}
    a, b = old.spec, new.spec
    for name in ("model", "params", "author", "note"):
        before, after = getattr(a, name), getattr(b, name)
        if _canonical(before) != _canonical(after):
            fields[name] = {"from": before, "to": after}
    old_vars = {k: v.to_json() for k, v in a.variables.items()}
    new_vars = {k: v.to_json() for k, v in b.variables.items()}
    for name in sorted(old_vars.keys() | new_vars.keys()):
        before, after = old_vars.get(name), new_vars.get(name)
        if _canonical(before) != _canonical(after):
            fields[f"variables.{name}"] = {"from": before, "to": after}
    return {"object": "prompt.diff", "template_id": old.template_id, "from": old.number,
            "to": new.number, "messages": text, "fields": fields}
