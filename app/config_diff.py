"""What a reload from one config to another would change, in plain words: ``changes(old,
new)`` (``switchboard config diff OLD NEW``, and the log line of every reload).

One line per change: a model, provider or price added or removed, a model's targets in their new
order, and every other setting that differs as ``path: old -> new``. Credentials are never
shown: a changed secret reads ``changed (secret)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, SecretStr

from app.config import GatewayConfig

_ENTRIES = ("providers", "models", "pricing")
"""Sections keyed by a name: an entry is added or removed whole."""
RESTART_SECTIONS = ("rate_limits", "calllog", "drift")
"""Config sections a running gateway reads only at start-up (``app.reload``)."""


def changes(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """Every difference from ``old`` to ``new`` (empty when they are the same)."""
    out: list[str] = []
    for section in type(new).model_fields:
        before, after = getattr(old, section), getattr(new, section)
        if before == after:
            continue
        later = " (takes effect on restart)" if section in RESTART_SECTIONS else ""
        if section in _ENTRIES:
            out += _entries(section, before, after)
        else:
            out += [f"{line}{later}" for line in _fields(section, before, after)]
    return out


def _entries(section: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    kind = {"providers": "provider", "models": "model", "pricing": "price of"}[section]
    out = []
    for name in sorted(before.keys() - after.keys()):
        out.append(f"{kind} {name}: removed")
    for name in sorted(after.keys() - before.keys()):
        out.append(f"{kind} {name}: added ({_summary(after[name])})")
    for name in sorted(before.keys() & after.keys()):
        if before[name] != after[name]:
            out += _fields(f"{kind} {name}", before[name], after[name])
    return out


def _summary(value: Any) -> str:
    if hasattr(value, "targets"):
        return "targets " + _targets(value.targets)
    if hasattr(value, "type"):
        return f"type {value.type}"
    return _show(value)


def _targets(targets: Any) -> str:
    return ", ".join(f"{t.provider}/{t.model}" for t in targets)


def _fields(where: str, before: Any, after: Any) -> list[str]:
    """``where``'s settings that differ (one level of nesting named with dots)."""
    if not isinstance(before, BaseModel) or type(before) is not type(after):
        return [f"{where}: {_show(before)} -> {_show(after)}"]
    out = []
    for name in type(after).model_fields:
        old, new = getattr(before, name), getattr(after, name)
        if old == new:
            continue
        label = f"{where}: {name}" if " " in where else f"{where}.{name}"
        if isinstance(old, SecretStr) or isinstance(new, SecretStr):
            out.append(f"{label} changed (secret)")
        elif name == "targets" and _targets(old) == _targets(new):  # settings of the same ones
            for a, b in zip(old, new, strict=True):
                if a != b:
                    out += _fields(f"{where}: target {a.provider}/{a.model}", a, b)
        elif name == "targets":
            out.append(f"{label} {_targets(old)} -> {_targets(new)}")
        elif isinstance(old, BaseModel) and type(old) is type(new):
            out += _fields(label, old, new)
        else:
            out.append(f"{label} {_show(old)} -> {_show(new)}")
    return out


def _show(value: Any) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)
