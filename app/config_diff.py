"""What a reload from one config to another would change, in plain words: ``changes(old,
new)`` (``switchboard config diff OLD NEW``, and the log line of every reload).

One line per change: a model, provider, experiment or price added or removed, a model's (or a
variant's) targets in their new order, a key added to or removed from a mapping (a variant, a
header, a param), and every other setting that differs as ``path old -> new``.

Credentials are never shown: a changed secret reads ``changed (secret)`` (``added (secret)``
when it is new). A value is a secret when it is a ``SecretStr`` field (API keys and the like),
the value of a provider's ``headers`` entry (any header may carry one: ``Authorization``,
``Helicone-Auth``...), or was written in either file with a ``${NAME}`` or ``${file:...}``
reference (``GatewayConfig.referenced``), wherever it is; a list or a setting that holds such a
value in it is a secret as a whole.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, SecretStr

from app.config import GatewayConfig, KeyPath

_ENTRIES = {"providers": "provider", "models": "model", "experiments": "experiment",
            "pricing": "price of"}
"""Sections keyed by a name (and what one entry is called): an entry is added or removed
whole."""
RESTART_SECTIONS = ("rate_limits", "calllog", "drift")
"""Config sections a running gateway reads only at start-up (``app.reload``)."""
SECRET = "(secret)"


def changes(old: GatewayConfig, new: GatewayConfig) -> list[str]:
    """Every difference from ``old`` to ``new`` (empty when they are the same)."""
    diff = _Diff(old.referenced | new.referenced)
    out: list[str] = []
    for section in type(new).model_fields:
        before, after = getattr(old, section), getattr(new, section)
        if before == after:
            continue
        later = " (takes effect on restart)" if section in RESTART_SECTIONS else ""
        if section in _ENTRIES:
            out += diff.entries(section, before, after)
        else:
            out += [f"{line}{later}" for line in diff.walk("", section, (section,),
                                                           before, after)]
    return out


class _Diff:
    """The lines of one diff; ``referenced``: the paths of both files' referenced values."""

    def __init__(self, referenced: frozenset[KeyPath]) -> None:
        self.referenced = referenced

    def entries(self, section: str, before: Mapping[str, Any],
                after: Mapping[str, Any]) -> list[str]:
        kind = _ENTRIES[section]
        out = [f"{kind} {name}: removed" for name in sorted(before.keys() - after.keys())]
        out += [f"{kind} {name}: added ({_summary(after[name])})"
                for name in sorted(after.keys() - before.keys())]
        for name in sorted(before.keys() & after.keys()):
            if before[name] != after[name]:
                out += self.walk(f"{kind} {name}: ", "", (section, name),
                                 before[name], after[name])
        return out

    def walk(self, prefix: str, dotted: str, path: KeyPath, before: Any,
             after: Any) -> list[str]:
        """The lines of one differing value: ``prefix`` names its entry (``model chat: ``),
        ``dotted`` its setting in it, ``path`` where it is in the YAML."""
        label = f"{prefix}{dotted}" if dotted else prefix.removesuffix(": ")
        if isinstance(before, SecretStr) or isinstance(after, SecretStr):
            return [f"{label} changed {SECRET}"]
        if isinstance(before, BaseModel) and type(before) is type(after):
            return self._fields(prefix, dotted, path, before, after)
        if isinstance(before, BaseModel) and isinstance(after, BaseModel) \
                and hasattr(before, "type") and hasattr(after, "type"):
            return [f"{prefix}{_dot(dotted, 'type')} {before.type} -> {after.type} (its other "
                    "settings replaced)"]
        if isinstance(before, dict) and isinstance(after, dict):
            return self._keys(prefix, dotted, path, before, after)
        if self._secret(path):
            return [f"{label} changed {SECRET}"]
        return [f"{label} {_show(before)} -> {_show(after)}"]

    def _fields(self, prefix: str, dotted: str, path: KeyPath, before: BaseModel,
                after: BaseModel) -> list[str]:
        out = []
        for name in type(after).model_fields:
            old, new = getattr(before, name), getattr(after, name)
            if old == new:
                continue
            if name == "targets" and old is not None and new is not None \
                    and _targets(old) == _targets(new):  # settings of the same targets
                where = f"{dotted} " if dotted else ""
                for i, (a, b) in enumerate(zip(old, new, strict=True)):
                    if a != b:
                        out += self.walk(f"{prefix}{where}target {a.provider}/{a.model}: ", "",
                                         (*path, name, str(i)), a, b)
            elif name == "targets":
                out.append(f"{prefix}{_dot(dotted, name)} {_targets(old)} -> {_targets(new)}")
            else:
                out += self.walk(prefix, _dot(dotted, name), (*path, name), old, new)
        return out

    def _keys(self, prefix: str, dotted: str, path: KeyPath, before: Mapping[str, Any],
              after: Mapping[str, Any]) -> list[str]:
        """A mapping's keys removed, added and changed (a header's value always a secret)."""
        headers = len(path) == 3 and path[0] == "providers" and path[2] == "headers"
        out = []
        for key in sorted(before.keys() | after.keys(), key=str):
            where, label = (*path, str(key)), f"{prefix}{_dot(dotted, str(key))}"
            if key not in after:
                out.append(f"{label} removed")
            elif key not in before:
                secret = headers or self._secret(where)
                out.append(f"{label} added {SECRET}" if secret
                           else f"{label} added ({_summary(after[key])})")
            elif before[key] != after[key]:
                out += ([f"{label} changed {SECRET}"] if headers
                        else self.walk(prefix, _dot(dotted, str(key)), where,
                                       before[key], after[key]))
        return out

    def _secret(self, path: KeyPath) -> bool:
        """Whether the value at ``path``, or one in it, was written with a reference."""
        return any(ref[:len(path)] == path for ref in self.referenced)


def _dot(dotted: str, name: str) -> str:
    return f"{dotted}.{name}" if dotted else name


def _summary(value: Any) -> str:
    if hasattr(value, "variants"):
        return f"model {value.model}, variants {', '.join(value.variants)}"
    if getattr(value, "targets", None) is not None:
        return "targets " + _targets(value.targets)
    if hasattr(value, "type"):
        return f"type {value.type}"
    return _show(value)


def _targets(targets: Any) -> str:
    if targets is None:
        return "null"
    return ", ".join(f"{t.provider}/{t.model}" for t in targets)


def _plain(value: Any) -> Any:
    """``value`` as JSON data (a secret as pydantic writes it: stars)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(_plain(value), sort_keys=True, default=str)
