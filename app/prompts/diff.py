"""What changed between two versions of a template: a unified text diff of the messages and a
field-by-field diff of the rest. Pure."""

from __future__ import annotations

import difflib
from typing import Any

from app.prompts.model import VersionRecord


def messages_text(record: VersionRecord) -> list[str]:
    """The messages as lines: a ``--- role`` (``--- role (name)``) line before each content."""
    lines: list[str] = []
    for message in record.spec.messages:
        who = message.role if message.name is None else f"{message.role} ({message.name})"
        lines.append(f"--- {who}")
        lines.extend(message.content.splitlines() or [""])
    return lines


def diff(old: VersionRecord, new: VersionRecord) -> dict[str, Any]:
    """``messages``: a unified diff (text, empty when equal); ``fields``: each other field
    (``variables``, ``model``, ``params``, ``author``, ``note``; variables by name) that differs,
    as ``{"from": ..., "to": ...}``."""
    tag = f"{old.template_id}"
    text = "\n".join(difflib.unified_diff(messages_text(old), messages_text(new),
                                          fromfile=f"{tag}@v{old.number}",
                                          tofile=f"{tag}@v{new.number}", lineterm=""))
    fields: dict[str, Any] = {}
    a, b = old.spec, new.spec
    for name in ("model", "params", "author", "note"):
        before, after = getattr(a, name), getattr(b, name)
        if before != after:
            fields[name] = {"from": before, "to": after}
    old_vars = {k: v.to_json() for k, v in a.variables.items()}
    new_vars = {k: v.to_json() for k, v in b.variables.items()}
    for name in sorted(old_vars.keys() | new_vars.keys()):
        if old_vars.get(name) != new_vars.get(name):
            fields[f"variables.{name}"] = {"from": old_vars.get(name), "to": new_vars.get(name)}
    return {"object": "prompt.diff", "template_id": old.template_id, "from": old.number,
            "to": new.number, "messages": text, "fields": fields}
