"""Prompt template rendering: plain substitution of ``{{ name }}``, nothing evaluated. Pure.

The syntax, in full:

- ``{{ name }}`` is a placeholder: two opening braces, optional spaces or tabs, a variable name
  (``[A-Za-z_][A-Za-z0-9_]*``, at most 64 characters), optional spaces or tabs, two closing
  braces. It is replaced by the variable's value.
- Any other text after an unescaped ``{{`` (``{{ a.b }}``, ``{{ x | upper }}``, ``{{ f() }}``,
  ``{{ }}``, ``{{{ x }}}``, an unclosed ``{{ x``) is a template error when the version is created:
  there are no expressions, filters, attribute or item access, calls, loops or conditionals.
  ``{%``, ``%}``, ``{#`` and a lone ``}}`` mean nothing and are kept as they are.
- Escaping: a backslash before ``{{`` escapes it: ``\\{{`` renders a literal ``{{``. Backslashes
  directly before ``{{`` pair up: ``\\\\{{ x }}`` renders one backslash followed by the value of
  ``x``; an odd count leaves the ``{{`` literal. A backslash anywhere else is literal.
- Values are inserted as text, once: a string as it is, any other type (integer, number,
  boolean, json) as its compact JSON text (``true``, ``3``, ``{"a":1}``). The result is never
  scanned again, so a value containing ``{{ other }}`` or ``\\{{`` stays exactly as it was sent.

Variables are declared per version with a type (``string``, ``integer``, ``number``, ``boolean``,
``json``) and optionally a default; one without a default is required. ``bind`` checks the
values a request sends against the declarations and raises ``PromptVariablesError`` naming every
missing, unknown and mistyped variable (never a value: values may be sensitive).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

VarType = Literal["string", "integer", "number", "boolean", "json"]
VAR_TYPES: tuple[VarType, ...] = ("string", "integer", "number", "boolean", "json")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_PLACEHOLDER = re.compile(r"\{\{[ \t]*([A-Za-z_][A-Za-z0-9_]{0,63})[ \t]*\}\}")
_OPEN = "{{"


class TemplateSyntaxError(ValueError):
    """A template text that is not plain text with ``{{ name }}`` placeholders; the message says
    where (1-based line and column) and why."""


@dataclass(frozen=True, slots=True)
class Slot:
    """A placeholder in a compiled text."""

    name: str


Segment = str | Slot
Compiled = tuple[Segment, ...]


def _where(text: str, index: int) -> str:
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return f"line {line}, column {column}"


def compile_text(text: str) -> Compiled:
    """``text`` as literal strings and placeholders, escapes resolved (see the module docstring);
    ``TemplateSyntaxError`` for a ``{{`` that does not open a ``{{ name }}``."""
    out: list[Segment] = []
    literal: list[str] = []
    start = 0
    while True:
        at = text.find(_OPEN, start)
        if at < 0:
            literal.append(text[start:])
            break
        slashes = 0
        while at - slashes - 1 >= start and text[at - slashes - 1] == "\\":
            slashes += 1
        literal.append(text[start:at - slashes])
        literal.append("\\" * (slashes // 2))
        if slashes % 2:  # escaped: a literal "{{"
            literal.append(_OPEN)
            start = at + 2
            continue
        match = _PLACEHOLDER.match(text, at)
        if match is None:
            raise TemplateSyntaxError(
                f"'{{{{' at {_where(text, at)} does not open a '{{{{ name }}}}' placeholder: "
                "expressions, filters, attribute access and blocks are not supported (write "
                "'\\{{' for a literal '{{')")
        if literal:
            out.append("".join(literal))
            literal = []
        out.append(Slot(match.group(1)))
        start = match.end()
    tail = "".join(literal)
    if tail:
        out.append(tail)
    return tuple(s for s in out if s != "")


def placeholders(compiled: Compiled) -> list[str]:
    """The variable names ``compiled`` uses, in order of first use."""
    seen: dict[str, None] = {}
    for segment in compiled:
        if isinstance(segment, Slot):
            seen.setdefault(segment.name, None)
    return list(seen)


def value_text(value: Any) -> str:
    """How a bound value is inserted: a string as it is, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def utf8_size(text: str) -> int:
    """The size of ``text`` in UTF-8, in bytes (an ASCII text is not encoded to count it)."""
    return len(text) if text.isascii() else len(text.encode())


def measure(texts: Iterable[Compiled]) -> tuple[int, dict[str, int]]:
    """What ``texts`` render to, before any value is known: the UTF-8 bytes of their literal
    text, and how many times each placeholder occurs. The rendered size is then the first plus,
    for each placeholder, its count times the size of its value (``rendered_size``)."""
    literal = 0
    uses: dict[str, int] = {}
    for compiled in texts:
        for segment in compiled:
            if isinstance(segment, str):
                literal += utf8_size(segment)
            else:
                uses[segment.name] = uses.get(segment.name, 0) + 1
    return literal, uses


def rendered_size(literal: int, uses: Mapping[str, int], values: Mapping[str, str]) -> int:
    """The UTF-8 bytes that texts ``measure`` gave ``literal`` and ``uses`` for render to with
    ``values`` (from ``bind``), without rendering them (every templated call: one loop, no
    containers; ``added`` says where they come from)."""
    size = literal
    for name, count in uses.items():
        value = values[name]
        size += count * (len(value) if value.isascii() else len(value.encode()))
    return size


def added(uses: Mapping[str, int], values: Mapping[str, str]) -> dict[str, int]:
    """The bytes each variable adds to a render (``rendered_size``'s parts)."""
    return {name: count * utf8_size(values[name]) for name, count in uses.items()}


def render_text(compiled: Compiled, values: Mapping[str, str]) -> str:
    """``compiled`` with each placeholder replaced by ``values[name]`` (texts, from ``bind``)."""
    return "".join(s if isinstance(s, str) else values[s.name] for s in compiled)


INT_MIN, INT_MAX = -(2**63), 2**64 - 1
"""The integers JSON is read and written exactly within here (orjson's int64 and uint64): the
request parser reads an integer literal past them as the nearest float (``2**64`` as
``1.8446744073709552e+19``), and an integer past them cannot be written at all."""
_PAST_64_BITS = (f"holds a number past the 64-bit integers ({INT_MIN} to {INT_MAX}), which "
                 "the gateway reads only approximately: send such a number as a string")


def _approximate(value: Any) -> bool:
    """Whether ``value``, as the request parser read it, holds a float outside the 64-bit
    integers: what an integer literal past them became (or a float literal that large: the
    two cannot be told apart once read). Iterative."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if item > INT_MAX or item <= INT_MIN:
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def type_problem(kind: VarType, value: Any) -> str | None:
    """Why ``value`` is not of ``kind`` (``None`` when it is). Booleans are not numbers; a
    ``number`` must be finite; ``json`` takes any value (a request's values are JSON already,
    checked by the request parser, and by ``bind`` for integers past 64 bits; a default is
    checked by ``json_problem`` as well)."""
    if kind == "number" and isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number, got NaN or infinity"
    if kind == "integer" and isinstance(value, float) and _approximate(value):
        return f"must be an integer from {INT_MIN} to {INT_MAX}, got a number past them"
    if kind == "string":
        ok = isinstance(value, str)
    elif kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "number":
        ok = (isinstance(value, int | float) and not isinstance(value, bool)
              and math.isfinite(value))
    elif kind == "boolean":
        ok = isinstance(value, bool)
    else:
        return None
    if ok:
        return None
    if not isinstance(value, _JSON_TYPES):  # a YAML date: say so, as ``json_problem`` does
        return _not_json(value)
    return f"must be {'an' if kind == 'integer' else 'a'} {kind}, got {json_type(value)}"


_JSON_TYPES = (dict, list, str, int, float, type(None))
"""The Python types JSON values are read as (``bool`` is an ``int``)."""


def _not_json(value: Any) -> str:
    """Why ``value``, of none of ``_JSON_TYPES`` (YAML builds dates, times, sets, bytes), is
    not a value a version can keep."""
    return f"holds a {type(value).__name__}, which is not JSON (in YAML, quote dates and times)"


MAX_JSON_DEPTH = 64
"""The deepest a version's ``json`` default or ``params`` may nest (a container is level 1):
the request parser's default limit (``limits.max_json_depth``). orjson, which hashes and logs
them, stops at 255 levels."""


def _text_problem(text: str) -> str | None:
    """Why a string cannot be stored as it is: a NUL (Postgres text holds none), or a lone
    surrogate (no UTF-8 encodes it: JSON's ``\\ud800`` escape can spell one)."""
    if "\x00" in text:
        return "holds a NUL character, which a Postgres text cannot"
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            return "holds a lone surrogate (\\ud800-\\udfff), which is not a character"
    return None


def json_problem(value: Any) -> str | None:
    """Why ``value`` (a default or ``params``, as written by an admin: YAML can build more than
    JSON) is not JSON that a version can keep (``None`` when it is): nested deeper than
    ``MAX_JSON_DEPTH`` levels, a NUL or lone surrogate in a string or key, a NaN or infinity, an
    integer past 64 bits, a key that is not a string, or a value of another type (a YAML
    date). Iterative: no recursion limit to hit."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth == MAX_JSON_DEPTH:
                return f"nests deeper than {MAX_JSON_DEPTH} levels"
            if isinstance(item, dict):
                if not all(isinstance(key, str) for key in item):
                    return "has a key that is not a string"
                why = next(filter(None, map(_text_problem, item)), None)
                if why is not None:
                    return why
                item = list(item.values())
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                return "holds NaN or infinity, which JSON does not have"
        elif isinstance(item, int) and not isinstance(item, bool) \
                and not INT_MIN <= item <= INT_MAX:
            return (f"holds an integer past 64 bits ({INT_MIN} to {INT_MAX}), which cannot "
                    "be sent exactly: write it as a string")
        elif isinstance(item, str):
            why = _text_problem(item)
            if why is not None:
                return why
        elif item is not None and not isinstance(item, int | bool):
            return _not_json(item)
    return None


def json_type(value: Any) -> str:
    """The JSON type name of ``value`` (for messages: never the value itself)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


@dataclass(frozen=True, slots=True)
class Declared:
    """One declared variable."""

    type: VarType
    has_default: bool = False
    default: Any = None
    default_text: str | None = field(init=False)
    """The default's text (``value_text``), computed once with the declaration: ``bind`` uses
    it on every call that leaves the variable out, and a ``json`` default written out again
    on each of them cost a call its whole size in CPU before the size check could run."""

    def __post_init__(self) -> None:
        # A frozen dataclass sets its derived fields through object.__setattr__.
        object.__setattr__(self, "default_text",
                           value_text(self.default) if self.has_default else None)


_NAMED = 20
"""The most variables an error's message names (each cut to ``_NAME_SHOWN`` characters): a
request may send thousands of long unknown names, and its 400 must stay small."""
_NAME_SHOWN = 64


class PromptVariablesError(ValueError):
    """Variables that do not fit a version's declarations: ``problems`` maps each offending
    variable to why (missing, unknown, or its type), in a stable order; the message names the
    first ``_NAMED`` of them and counts the rest."""

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = problems
        named = itertools.islice(problems.items(), _NAMED)
        message = "; ".join(f"'{_shown(name)}' {why}" for name, why in named)
        if len(problems) > _NAMED:
            message += f"; and {len(problems) - _NAMED} more"
        super().__init__(message)


def _shown(name: str) -> str:
    return name if len(name) <= _NAME_SHOWN else name[:_NAME_SHOWN] + "..."


def bind(declared: Mapping[str, Declared], given: Mapping[str, Any]) -> dict[str, str]:
    """The text of every declared variable: the value given, else its default.
    ``PromptVariablesError`` naming each required variable not given, each variable given but
    not declared, and each value of the wrong type (a ``json`` value holding an integer past
    64 bits among them: the request parser read it as an approximate float)."""
    problems: dict[str, str] = {}
    for name in given:
        if name not in declared:
            problems[name] = "is not a variable of this template version"
    texts: dict[str, str] = {}
    for name, spec in declared.items():
        if name in given:
            value = given[name]
            why = type_problem(spec.type, value)
            if why is not None:
                problems[name] = why
                continue
        elif spec.default_text is not None:  # computed with the declaration
            texts[name] = spec.default_text
            continue
        else:
            problems[name] = f"is required ({spec.type}) and was not given"
            continue
        texts[name] = text = value_text(value)
        # A float past the 64-bit integers is written with an exponent ("e+"): a value
        # without one holds none and is not walked.
        if spec.type == "json" and "e+" in text and _approximate(value):
            problems[name] = _PAST_64_BITS
    if problems:
        raise PromptVariablesError(dict(sorted(problems.items())))
    return texts
