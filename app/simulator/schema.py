"""Minimal valid outputs for structured-output constraints: JSON schema, regex, choice, grammar.

``instance(schema)`` fills every declared property (required or not) with the simplest value of its
type, honouring ``enum``/``const``/``default``, ``$ref`` into ``$defs``/``definitions``,
``anyOf``/``oneOf`` (first branch), ``allOf`` (merged), ``minLength``, ``minimum`` and
``minItems``. ``regex_sample`` builds a short string the pattern fully matches.
"""

from __future__ import annotations

import importlib
import string
from typing import Any

# ``re._parser`` has no type stubs and ``sre_parse`` warns on import since 3.11; either way it is
# the stdlib's own parser, so patterns are read exactly as ``re`` reads them.
_parser: Any = importlib.import_module("re._parser")
_MAX_DEPTH = 12
_FORMATS = {"date": "2024-01-01", "date-time": "2024-01-01T00:00:00Z", "time": "00:00:00",
            "email": "sim@example.com", "uri": "https://example.com", "uuid":
            "00000000-0000-4000-8000-000000000000", "ipv4": "127.0.0.1", "hostname": "example.com"}


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    node: Any = root
    for part in ref.removeprefix("#/").split("/"):
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def _string(schema: dict[str, Any]) -> str:
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _FORMATS:
        return _FORMATS[fmt]
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        return regex_sample(pattern)
    size = schema.get("minLength")
    return "a" * size if isinstance(size, int) and size > 0 else ""


def _number(schema: dict[str, Any], kind: str) -> int | float:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    value: int | float = 0
    if isinstance(low, int | float):
        value = low + 1 if "exclusiveMinimum" in schema and "minimum" not in schema else low
    return int(value) if kind == "integer" else value


def instance(schema: Any, root: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """The simplest JSON value valid against ``schema``."""
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None if schema is False else {}
    root = schema if root is None else root
    if isinstance(schema.get("$ref"), str):
        return instance(_resolve(schema["$ref"], root), root, depth + 1)
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return instance(schema[key][0], root, depth + 1)
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            if isinstance(part, dict):
                merged.update(part)
        return instance({**merged, **{k: v for k, v in schema.items() if k != "allOf"}},
                        root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string" if "pattern" in schema else None
    return _typed(schema, kind, root, depth)


def _typed(schema: dict[str, Any], kind: Any, root: dict[str, Any], depth: int) -> Any:
    if kind == "object":
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            return {}
        return {name: instance(sub, root, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        size = schema.get("minItems")
        count = size if isinstance(size, int) and size > 0 else 0
        items = schema.get("items", {})
        return [instance(items, root, depth + 1) for _ in range(count)]
    if kind == "string":
        return _string(schema)
    if kind in ("integer", "number"):
        return _number(schema, kind)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return {}


def regex_sample(pattern: str) -> str:
    """A short string that ``re.fullmatch(pattern, s)`` accepts (best effort for lookarounds)."""
    groups: dict[int, str] = {}
    return _emit(_parser.parse(pattern), groups)


def _emit(items: Any, groups: dict[int, str]) -> str:
    out: list[str] = []
    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            out.append(chr(arg))
        elif name == "NOT_LITERAL":
            out.append("a" if arg != ord("a") else "b")
        elif name == "ANY":
            out.append("a")
        elif name == "IN":
            out.append(_class_member(arg))
        elif name == "BRANCH":
            out.append(_emit(arg[1][0], groups))
        elif name == "SUBPATTERN":
            text = _emit(arg[-1], groups)
            if arg[0] is not None:
                groups[arg[0]] = text
            out.append(text)
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, _high, body = arg
            out.append(_emit(body, groups) * low)
        elif name == "GROUPREF":
            out.append(groups.get(arg, ""))
        elif name == "ATOMIC_GROUP":
            out.append(_emit(arg, groups))
        # AT (anchors), ASSERT and ASSERT_NOT consume nothing.
    return "".join(out)


def _class_member(items: Any) -> str:
    negate = False
    for op, arg in items:
        name = str(op)
        if name == "NEGATE":
            negate = True
        elif negate:
            break
        elif name == "LITERAL":
            return chr(arg)
        elif name == "RANGE":
            return chr(arg[0])
        elif name == "CATEGORY":
            category = str(arg)
            return {"CATEGORY_DIGIT": "0", "CATEGORY_SPACE": " ",
                    "CATEGORY_NOT_WORD": " "}.get(category, "a")
    if negate:  # any character outside the listed ones
        for candidate in string.ascii_letters + string.digits + string.punctuation + " ":
            if not any(_in_item(op, arg, candidate) for op, arg in items):
                return candidate
    return "a"


def _in_item(op: Any, arg: Any, char: str) -> bool:
    name, code = str(op), ord(char)
    if name == "LITERAL":
        return bool(arg == code)
    if name == "RANGE":
        return bool(arg[0] <= code <= arg[1])
    if name == "CATEGORY":
        table = {"CATEGORY_DIGIT": char.isdigit(), "CATEGORY_SPACE": char.isspace(),
                 "CATEGORY_WORD": char.isalnum() or char == "_"}
        return bool(table.get(str(arg), False))
    return False


def grammar_sample(grammar: str) -> str:
    """A best-effort sentence of a grammar (GBNF/EBNF/Lark): its first double-quoted literal, which
    is the whole language for the common ``root ::= "yes" | "no"`` style."""
    start = grammar.find('"')
    end = grammar.find('"', start + 1) if start >= 0 else -1
    return grammar[start + 1:end] if end > start >= 0 else ""
