"""Deterministic structured answers, shared by the ``mock`` provider and the simulator.

``instance(schema)`` builds a JSON value valid against a JSON schema, the same one every time: every
declared property of an object (only the required ones past a nesting depth of
``_SHALLOW_DEPTH``, so optional self-references end), the simplest value of each type (``""``,
``0``, ``false``, ``[]`` grown to ``minItems``), ``const``, then ``enum``'s first value, then a
``default`` of the declared type; ``$ref`` into ``$defs``/``definitions`` (siblings merged in),
``anyOf``/``oneOf`` by their first branch (by a ``null`` branch past the shallow depth),
``allOf`` merged, type lists by their first non-null type; strings by ``format`` (date, email,
...), ``pattern`` (see ``regex_sample``) and ``minLength``; numbers inside ``minimum``/
``maximum`` (exclusive ones too, draft-4 booleans included) on ``multipleOf``, integers inside
64 bits and finite floats past them (what orjson writes: ``minimum: 1e20`` gets ``1e20``);
arrays by ``prefixItems`` then ``items``, with distinct items under ``uniqueItems``; objects up
to ``minProperties``, a ``required`` that is not a list read as none. ``not``,
``if``/``then``/``else`` and ``dependent*`` are not read. Schemas no small instance satisfies
(``minItems: 1e9``, required self-references, bounds past the float range) get a value cut at
10,000 JSON values, 100,000-character strings (and regex repetitions) and ``MAX_CHARS``
characters of strings in all (``const``, ``enum`` and ``default`` values included, each time
they are used), invalid but bounded: a schema of a few KB cannot make one instance of GBs
(``a{100000}`` written 3,000 times, or ``minItems`` of long strings).

``strict_problem`` says why a schema breaks OpenAI's strict-mode rules, ``pick_tool`` which tool
an answer calls when the client lets the model choose.

(Past 400 lines: one generator over the JSON-schema keywords, each a few lines, plus the strict
check and tool choice that read the same schemas.)
"""

from __future__ import annotations

import importlib
import math
import re
import string
import sys
from collections.abc import Sequence
from typing import Any

# ``re._parser`` has no type stubs and ``sre_parse`` warns on import since 3.11; either way it is
# the stdlib's own parser, so patterns are read exactly as ``re`` reads them.
_parser: Any = importlib.import_module("re._parser")
_MAX_DEPTH = 32
_MAX_VALUES = 10_000  # JSON values one instance may hold
_MAX_CHARS = 100_000  # longest string built for minLength, or for one regex repetition
MAX_CHARS = 2**19
"""The most characters of strings one instance (or one ``regex_sample``) holds: more than the
mock can send of it (65,536 tokens of at most 6 characters: ``app.providers.mock_answer``)."""
_SHALLOW_DEPTH = 6
_INT_LOW, _INT_HIGH = -(2**63), 2**64 - 1  # the integers orjson writes
_FORMATS = {"date": "2024-01-01", "date-time": "2024-01-01T00:00:00Z", "time": "00:00:00Z",
            "email": "sim@example.com", "idn-email": "sim@example.com",
            "uri": "https://example.com", "iri": "https://example.com",
            "uri-reference": "https://example.com", "url": "https://example.com",
            "uuid": "00000000-0000-4000-8000-000000000000", "ipv4": "127.0.0.1", "ipv6": "::1",
            "hostname": "example.com", "idn-hostname": "example.com", "duration": "P1D",
            "json-pointer": "", "regex": ".*"}
_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "array": (list,), "object": (dict,), "null": (type(None),)}
_WORD = re.compile(r"[a-z0-9]+")
_MIN_MATCH_CHARS = 3


class _Room:
    """The characters a value may still take (``MAX_CHARS`` to start with)."""

    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left

    def take(self, size: int) -> bool:
        """Whether ``size`` characters were left (then taken)."""
        if size > self.left:
            return False
        self.left -= size
        return True


class _Walk:
    """One ``instance`` call's root schema and the values and characters it may still build:
    schemas whose every instance is huge or infinite (``minItems: 1e9``, required
    self-references, long strings many times) get a truncated, invalid value instead of
    exhausting memory."""

    __slots__ = ("left", "room", "root", "sizes")

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.left = _MAX_VALUES
        self.room = _Room(MAX_CHARS)
        self.sizes: dict[int, int] = {}
        """The size of each ``const``, ``enum`` or ``default`` value used (by ``id``)."""

    def fixed(self, value: Any) -> Any:
        """A value of the schema itself, its characters taken from the room (``None`` when
        they do not fit: the instance is cut there)."""
        size = self.sizes.get(id(value))
        if size is None:
            size = self.sizes[id(value)] = _size(value)
        return value if self.room.take(size) else None


def _size(value: Any) -> int:
    """About how many characters ``value`` takes written as JSON (at least its strings')."""
    if isinstance(value, str):
        return len(value) + 2
    if isinstance(value, dict):
        return 2 + sum(len(str(k)) + 3 + _size(v) for k, v in value.items())
    if isinstance(value, list):
        return 2 + sum(_size(v) + 1 for v in value)
    return len(str(value)) if isinstance(value, int | float) else 5


def instance(schema: Any) -> Any:
    """A JSON value valid against ``schema`` (see the module docstring)."""
    return _value(schema, _Walk(schema if isinstance(schema, dict) else {}), 0, 0)


def _value(schema: Any, walk: _Walk, depth: int, variant: int = 0) -> Any:
    """``variant`` > 0 asks for a value different from variant 0's where the schema allows it
    (for ``uniqueItems``)."""
    walk.left -= 1
    if not isinstance(schema, dict):
        return None if schema is False else {}
    if depth > _MAX_DEPTH or walk.left < 0:
        return None
    root = walk.root
    if isinstance(schema.get("$ref"), str):
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        return _value({**_resolve(schema["$ref"], root), **siblings}, walk, depth + 1, variant)
    if "const" in schema:
        return walk.fixed(schema["const"])
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return walk.fixed(enum[variant % len(enum)])
    if "default" in schema and not variant and _fits_type(schema["default"], schema):
        return walk.fixed(schema["default"])
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            branch = branches[0]
            if depth > _SHALLOW_DEPTH:
                branch = next((b for b in branches if _is_null(b)), branch)
            return _value(branch, walk, depth + 1, variant)
    if isinstance(schema.get("allOf"), list):
        return _value(_merge_all(schema, root), walk, depth + 1, variant)
    return _typed(schema, _kind(schema, depth), walk, depth, variant)


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    """The schema a local ``$ref`` (``#``, ``#/$defs/X``, ``#/definitions/X``...) points at."""
    node: Any = root
    path = ref.removeprefix("#").strip("/")
    for part in path.split("/") if path else ():
        part = part.replace("~1", "/").replace("~0", "~")
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else {}


def _is_null(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("type") == "null"


def _fits_type(value: Any, schema: dict[str, Any]) -> bool:
    """Whether ``value`` has the type ``schema`` declares (no ``type``: any value but null)."""
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if isinstance(kind, str) else None
    if kinds is None:
        return value is not None
    for name in kinds:
        allowed = _TYPES.get(name, ())
        if isinstance(value, bool) and name not in ("boolean",):
            continue
        if isinstance(value, allowed):
            return True
    return False


def _merge_all(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """``allOf`` as one schema: parts' properties and required lists united, other keys
    overwritten in order, the schema's own keys last."""
    merged: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    required: list[str] = []
    parts = [*schema["allOf"], {k: v for k, v in schema.items() if k != "allOf"}]
    for part in parts:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("$ref"), str):
            part = {**_resolve(part["$ref"], root), **{k: v for k, v in part.items()
                                                        if k != "$ref"}}
        if isinstance(part.get("properties"), dict):
            properties.update(part["properties"])
        if isinstance(part.get("required"), list):
            required += [name for name in part["required"] if name not in required]
        merged.update({k: v for k, v in part.items() if k not in ("properties", "required")})
    if properties:
        merged["properties"] = properties
    if required:
        merged["required"] = required
    return merged


def _kind(schema: dict[str, Any], depth: int) -> Any:
    kind = schema.get("type")
    if isinstance(kind, list):
        if depth > _SHALLOW_DEPTH and "null" in kind:
            return "null"
        return next((k for k in kind if k != "null"), "null")
    if kind is not None:
        return kind
    if any(key in schema for key in ("properties", "required", "additionalProperties")):
        return "object"
    if any(key in schema for key in ("items", "prefixItems", "minItems")):
        return "array"
    if any(key in schema for key in ("pattern", "format", "minLength")):
        return "string"
    if any(key in schema for key in ("minimum", "maximum", "exclusiveMinimum", "multipleOf")):
        return "number"
    return None


def _typed(schema: dict[str, Any], kind: Any, walk: _Walk, depth: int, variant: int) -> Any:
    if kind == "object":
        return _object(schema, walk, depth)
    if kind == "array":
        return _array(schema, walk, depth)
    if kind == "string":
        return _string(schema, variant, walk.room)
    if kind in ("integer", "number"):
        return _number(schema, integer=kind == "integer", variant=variant)
    if kind == "boolean":
        return variant % 2 == 1
    if kind == "null":
        return None
    return {}


def _object(schema: dict[str, Any], walk: _Walk, depth: int) -> dict[str, Any]:
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = _required(schema)
    names = list(properties) if depth <= _SHALLOW_DEPTH else [
        name for name in properties if name in required]
    out = {name: _value(properties[name], walk, depth + 1) for name in names}
    extra = schema.get("additionalProperties", {})
    for name in required:  # required names no property declares
        if name not in out:
            out[name] = _value(_pattern_schema(schema, name) or extra, walk, depth + 1)
    minimum = schema.get("minProperties")
    if isinstance(minimum, int) and extra is not False:
        while len(out) < minimum and walk.left > 0:
            name = f"key{len(out) + 1}"
            out[name] = _value(_pattern_schema(schema, name) or extra, walk, depth + 1)
    return out


def _required(schema: dict[str, Any]) -> list[str]:
    """The names ``required`` lists (none when it is not a list: ``"required": true``)."""
    listed = schema.get("required")
    return [name for name in listed if isinstance(name, str)] if isinstance(listed, list) else []


def _pattern_schema(schema: dict[str, Any], name: str) -> Any:
    patterns = schema.get("patternProperties")
    if isinstance(patterns, dict):
        for pattern, sub in patterns.items():
            try:
                if re.search(pattern, name):
                    return sub
            except re.error:
                continue
    return None


def _array(schema: dict[str, Any], walk: _Walk, depth: int) -> list[Any]:
    size = schema.get("minItems")
    count = size if isinstance(size, int) and size > 0 else 0
    prefix = schema.get("prefixItems")
    prefix = prefix if isinstance(prefix, list) else []
    items = schema.get("items", {})
    if isinstance(items, list):  # draft 4-7 tuple form
        prefix, items = items, schema.get("additionalItems", {})
    unique = schema.get("uniqueItems") is True
    out = [_value(sub, walk, depth + 1, 0) for sub in prefix[:count]]
    while len(out) < count and walk.left > 0:
        out.append(_value(items, walk, depth + 1, len(out) if unique else 0))
    return out


def _string(schema: dict[str, Any], variant: int, room: _Room) -> str:
    fmt = schema.get("format")
    pattern = schema.get("pattern")
    if isinstance(fmt, str) and fmt in _FORMATS:
        text = _FORMATS[fmt]
    elif isinstance(pattern, str):
        try:
            return _emit(_parser.parse(pattern), {}, room)  # its characters taken as built
        except (re.error, ValueError, RecursionError):  # not a pattern re can read
            return ""
    else:
        text = string.ascii_lowercase[variant % 26] * (variant // 26 + 1) if variant else ""
    size = schema.get("minLength")
    if isinstance(size, int) and len(text) < size and not isinstance(pattern, str):
        text += "a" * max(0, min(size, _MAX_CHARS, len(text) + room.left) - len(text))
    room.left -= min(len(text), room.left)
    return text


def _bound(schema: dict[str, Any], inclusive: str, exclusive: str) -> tuple[float | None, bool]:
    """A bound and whether it is exclusive, from either draft's spelling."""
    value, flag = schema.get(inclusive), schema.get(exclusive)
    if _is_number(flag):
        return flag, True
    if _is_number(value):
        return value, flag is True
    return None, False


def _is_number(value: Any) -> bool:
    """Whether ``value`` is a JSON number: not a bool, not NaN or an infinity."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool)


def _number(schema: dict[str, Any], *, integer: bool, variant: int) -> int | float:
    low, low_open = _bound(schema, "minimum", "exclusiveMinimum")
    high, high_open = _bound(schema, "maximum", "exclusiveMaximum")
    step_value = schema.get("multipleOf")
    step: float | None = step_value if isinstance(step_value, int | float) and \
        not isinstance(step_value, bool) and step_value > 0 else None
    if integer:
        step = 1 if step is None else step if float(step).is_integer() else None
    candidate: float = 0
    if low is not None and (candidate < low or (low_open and candidate <= low)):
        candidate = low
    if high is not None and (candidate > high or (high_open and candidate >= high)):
        candidate = high
    value: float = candidate
    try:
        if step is not None:
            value = _on_step(candidate, step, low, low_open, high, high_open, variant)
        else:
            value = candidate + variant
            if low is not None and low_open and value <= low:
                value = low + 1 if high is None or low + 1 < high else (low + high) / 2
            if high is not None and (value > high or (high_open and value >= high)):
                value = high - 1 if high_open else high
                if low is not None and (value < low or (low_open and value <= low)):
                    value = (low + high) / 2
    except (OverflowError, ValueError):  # bounds near the float range: no step fits
        value = candidate
    return _writable(value, integer=integer, low=low, low_open=low_open, high=high,
                     high_open=high_open)


def _writable(value: float, *, integer: bool, low: float | None, low_open: bool,
              high: float | None, high_open: bool) -> int | float:
    """``value`` as a number every JSON writer takes: an integer inside 64 bits (orjson
    writes no more), else a finite float, moved past an exclusive bound that float rounding
    crossed (``exclusiveMinimum: 1e18`` gets 10**18 + 1, ``1e308`` gets 1.0000000000000002e308).
    Past the float range no bound can be met: the largest float, invalid but written."""
    if integer and isinstance(value, float) and math.isfinite(value):
        value = int(value)
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        whole = int(value)
        if low is not None and low_open and whole <= low:
            whole = math.floor(low) + 1
        if high is not None and high_open and whole >= high:
            whole = math.ceil(high) - 1
        if _INT_LOW <= whole <= _INT_HIGH:
            return whole
        value = whole
    try:
        number = float(value)
    except OverflowError:  # an integer past the float range
        number = math.inf if value > 0 else -math.inf
    if math.isnan(number):
        return 0
    if low is not None and (number < low or (low_open and number <= low)):
        number = math.nextafter(number, math.inf)
    if high is not None and (number > high or (high_open and number >= high)):
        number = math.nextafter(number, -math.inf)
    return number if math.isfinite(number) else math.copysign(sys.float_info.max, number)


def _on_step(candidate: float, step: float, low: float | None, low_open: bool,
             high: float | None, high_open: bool, variant: int) -> float:
    """The multiple of ``step`` nearest above ``candidate`` that is inside the bounds."""
    decimals = max(0, -math.floor(math.log10(step))) + 6 if step < 1 else 0
    multiple = math.ceil(candidate / step) + variant
    if low is not None and low_open and multiple * step <= low:
        multiple += 1
    if high is not None and (multiple * step > high or (high_open and multiple * step >= high)):
        multiple = math.floor(high / step) - (1 if high_open and multiple * step >= high else 0)
    return round(multiple * step, decimals) if decimals else multiple * step


def strict_problem(schema: Any, path: str = "") -> str | None:
    """Why ``schema`` breaks OpenAI's strict structured-output rules, or None: every object
    (in properties, items, ``anyOf`` branches and ``$defs``) must list all its properties in
    ``required`` (an array) and set ``additionalProperties`` to false, and a root that declares
    a ``type`` must declare ``object``."""
    if not isinstance(schema, dict):
        return None
    where = path or "(root)"
    if not path and schema.get("type", "object") != "object":
        return "the root must be a JSON Schema of 'type: \"object\"'"
    if schema.get("type") == "object" or "properties" in schema:
        if schema.get("additionalProperties") is not False:
            return f"at {where}, 'additionalProperties' must be present and false"
        properties = schema.get("properties", {})
        if not isinstance(properties, dict):
            return f"at {where}, 'properties' must be an object"
        if not isinstance(schema.get("required", []), list):
            return f"at {where}, 'required' must be an array of property names"
        missing = [name for name in properties if name not in _required(schema)]
        if missing:
            return f"at {where}, 'required' must list every property; missing {missing[0]!r}"
    children: list[tuple[str, Any]] = []
    prefix = f"{path}." if path else ""
    for key in ("properties", "$defs", "definitions"):
        if isinstance(schema.get(key), dict):
            children += [(f"{prefix}{key}.{name}", sub) for name, sub in schema[key].items()]
    if isinstance(schema.get("items"), dict):
        children.append((f"{prefix}items", schema["items"]))
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list):
            children += [(f"{prefix}{key}[{i}]", sub) for i, sub in enumerate(schema[key])]
    for child_path, child in children:
        found = strict_problem(child, child_path)
        if found is not None:
            return found
    return None


def pick_tool(tools: Sequence[tuple[str, str]], text: str) -> int:
    """The index of the tool an answer to ``text`` calls, from ``(name, description)`` pairs:
    the one whose name and description share the most distinct words (3+ letters, any case,
    ``snake_case`` and ``kebab-case`` names split) with ``text``; the first on a tie, so the
    first tool when nothing matches."""
    words = {w for w in _WORD.findall(text.lower()) if len(w) >= _MIN_MATCH_CHARS}
    best, best_score = 0, 0
    for index, (name, description) in enumerate(tools):
        own = set(_WORD.findall(f"{name} {description}".lower()))
        score = len(words & own)
        if score > best_score:
            best, best_score = index, score
    return best


def regex_sample(pattern: str) -> str:
    """A short string that ``re.fullmatch(pattern, s)`` accepts (best effort for lookarounds),
    of at most ``MAX_CHARS`` characters (cut short, it may not match)."""
    return _emit(_parser.parse(pattern), {}, _Room(MAX_CHARS))


def _emit(items: Any, groups: dict[int, str], room: _Room) -> str:
    """The sample of parsed ``items``, its characters taken from ``room`` as they are built:
    what does not fit is left out."""
    out: list[str] = []
    for op, arg in items:
        name = str(op)
        if name in ("LITERAL", "NOT_LITERAL", "ANY", "IN"):
            if not room.take(1):
                continue
            out.append(chr(arg) if name == "LITERAL" else _class_member(arg) if name == "IN"
                       else "a" if name == "ANY" or arg != ord("a") else "b")
        elif name == "BRANCH":
            out.append(_emit(arg[1][0], groups, room))
        elif name == "SUBPATTERN":
            text = _emit(arg[-1], groups, room)
            if arg[0] is not None:
                groups[arg[0]] = text
            out.append(text)
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, _high, body = arg
            once = _emit(body, groups, room)  # its characters taken once
            times = min(low, _MAX_CHARS // max(len(once), 1))
            more = min(times - 1, room.left // len(once)) if times and once else 0
            room.left += 0 if times else len(once)  # not used: given back
            room.left -= more * len(once)
            out.append(once * (more + 1) if times else "")
        elif name == "GROUPREF":
            again = groups.get(arg, "")
            if room.take(len(again)):
                out.append(again)
        elif name == "ATOMIC_GROUP":
            out.append(_emit(arg, groups, room))
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
