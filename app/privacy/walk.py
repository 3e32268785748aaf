"""The text parts of request and answer bodies, found and rewritten.

A body is walked whole: every string value at any depth (messages and their content parts, tool
calls' arguments, ids and tool results, tool and ``response_format`` schemas, a completion's
``prompt``, an embedding's ``input``, an Anthropic body's ``system``, blocks and plain-text
document sources, ``documents``, ``user`` and ``metadata``: whatever the gateway forwards), and
every dict key that is not a field name of the wire formats (``FIELDS``: a ``metadata`` key, a
schema's property names, a document's own fields). Skipped, in the wire format's own fields
only (never in the client's own data: ``OWN_KEYS``, such as ``metadata`` and a tool call's
``input``, and whatever sits under a key of the client's own is scanned whole, the walk's
``free``):

- the string values of ``SKIP_KEYS`` that look like one of their few values (``_LABEL``:
  one word of letters, ``_./:-`` and at most three digits): names the gateway or the API
  fixes to a small set of values (a role, a block's type, a reason, a media type, an
  encoding, a tier, ``tool_choice``'s ``auto``); and the body's own ``model`` (at its top),
  which the gateway replaces with its target's before the call leaves (a dict under one of
  them is walked: ``tool_choice``'s function name is text);
- base64 payloads, which cannot be rewritten without breaking them: a ``data:`` URL with
  ``;base64,`` whose payload is all base64 (anywhere: ``image_url.url``, ``file_data``), and a
  ``data`` or ``signature`` value of at least ``_MIN_PAYLOAD`` characters that is all base64
  (Anthropic's ``base64`` image and document sources and thinking signatures, OpenAI's
  ``input_audio``, Anthropic's ``redacted_thinking``), unless its block's ``type`` is ``text``
  (a plain-text document's ``data`` is its text).

Anthropic's signed thinking blocks are skipped whole (unless ``blocks``, as a call record's
scrub asks): an assistant's ``thinking_blocks`` (chat) and a block whose ``type`` is
``thinking`` or ``redacted_thinking`` (native content). Anthropic refuses a block whose text is
not byte for byte what it signed, so they are neither redacted on the way in nor restored on the
way out (their text, placeholders included, is Anthropic's own; ``reasoning_content`` carries
it for reading, restored).

Anything else starting with ``data:`` is text like any other. Rewriting copies only the
containers on the way to a changed string or key (a dict keeps its order); the rest is shared
with the original. A rewritten id stays matched with its pair (a tool call's ``id`` and its
result's ``tool_call_id``): the same value gets the same placeholder wherever it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

from app.providers.tool_errors import TOOL_ERROR

SKIP_KEYS = frozenset({
    "model", "role", "type", "object", "finish_reason", "stop_reason", "index", "media_type",
    "encoding_format", "service_tier", "reasoning_effort", "tool_choice",
})
"""Keys whose string values are not scanned (a dict or list under one is)."""
_LABEL = re.compile(r"(?![^0-9]*(?:[0-9][^0-9]*){4})[A-Za-z0-9_./:-]{0,64}")
"""What a ``SKIP_KEYS`` value (``model`` aside) looks like when it is one of its field's few
values (``assistant``, ``image/png``, ``base64``, ``end_turn``): a word of letters, ``_./:-``
and at most three digits. Any other is scanned: a client's own ``metadata`` entry named
``type`` could carry an email or a phone number, and what the pattern detectors find needs an
``@`` or more digits."""
_SIGNED_TYPES = frozenset({"thinking", "redacted_thinking"})
"""The ``type`` of Anthropic's signed thinking blocks, skipped whole (see the docstring)."""
_PAYLOAD_KEYS = frozenset({"data", "signature"})
"""Keys whose values are base64 payloads unless they are plain text (see the docstring)."""
FIELDS = frozenset({
    # requests: OpenAI's chat, completions and embeddings, Anthropic's Messages, Cohere's
    "messages", "content", "name", "tool_calls", "function", "arguments", "tool_call_id",
    "refusal", "audio", "text", "image_url", "url", "detail", "input_audio", "format", "file",
    "file_data", "file_id", "filename", "frequency_penalty", "presence_penalty", "logit_bias",
    "logprobs", "top_logprobs", "max_tokens", "max_completion_tokens", "n", "seed", "stop",
    "stream", "stream_options", "include_usage", "temperature", "top_p", "top_k", "tools",
    "parallel_tool_calls", "functions", "function_call", "user", "metadata",
    "store", "modalities", "prediction", "response_format", "json_schema", "schema", "strict",
    "description", "parameters", "reasoning_content", "id", "prompt", "suffix", "echo",
    "best_of", "input", "dimensions", "user_id", "system", "stop_sequences", "thinking",
    "budget_tokens", "source", "tool_use_id", "is_error", "citations", "title", "context",
    "input_schema", "cache_control", "documents", "disable_parallel_tool_use", "voice",
    "redacted_thinking", "thinking_blocks", "custom", "grammar", "definition", "syntax",
    "allowed_tools", "mode",
    # JSON Schema keywords (tools' parameters, response_format's schema)
    "properties", "items", "required", "enum", "additionalProperties", "anyOf", "oneOf",
    "allOf", "default", "minimum", "maximum", "minItems", "maxItems", "minLength", "maxLength",
    "pattern", "const", "nullable", "$ref", "$defs", "definitions", "examples",
    # answers (restored, and scrubbed when captured)
    "choices", "message", "delta", "usage", "prompt_tokens", "completion_tokens",
    "total_tokens", "created", "system_fingerprint", "prompt_tokens_details",
    "completion_tokens_details", "cached_tokens", "reasoning_tokens", "annotations",
    "embedding", "stop_sequence", "input_tokens", "output_tokens",
}) | SKIP_KEYS | _PAYLOAD_KEYS
"""Field names of the wire formats: their values are walked, the names themselves not scanned
(any other key is: it is the client's own)."""
OWN_KEYS = frozenset({
    "metadata", "input", "arguments", "documents", "default", "const", "enum", "examples",
})
"""Fields whose values are the client's own data, walked whole (whatever its keys are named):
``metadata``; a tool call's ``input`` (Anthropic's ``tool_use``, OpenAI's custom tool call;
an embedding's ``input`` too) and ``arguments``; Cohere's ``documents``; the instance values of
a JSON schema (``default``, ``const``, ``enum``, ``examples``)."""
_WALK, _NAME, _PAYLOAD, _MODEL, _OWN, _SIGNED = 0, 1, 2, 3, 4, 5
_KINDS = {key: _MODEL if key == "model" else _NAME if key in SKIP_KEYS
          else _PAYLOAD if key in _PAYLOAD_KEYS else _OWN if key in OWN_KEYS
          else _SIGNED if key == "thinking_blocks" else _WALK
          for key in FIELDS}
"""What the walk does with each field's value (one dict lookup a key): walk it; skip it when
it is a string that looks like its field's value (``SKIP_KEYS``); skip it when it is a base64
payload; skip it when it is the body's own ``model``; or walk it as the client's own data,
skipping nothing (``OWN_KEYS``); or skip it as signed thinking blocks (``_SIGNED_TYPES``)."""
_MIN_PAYLOAD = 64
"""The shortest ``data`` or ``signature`` taken for a base64 payload: an image or a thinking
signature is far longer, a card number, an IBAN or a phone number shorter."""
_MAX_DEPTH = 256
_MIN_NUMBER = 10 ** 6
"""The least integer (in absolute value) whose decimal text is scanned: seven digits, the
fewest any number detector needs (a phone number; an SSN has nine, a card 13)."""
_JSON_KEYS = frozenset({"arguments", "content", "text"})
"""Fields whose string value may be a JSON document the client wrote (``_decoded``; ``text``:
a text part's, in a tool result's list of parts)."""
_TOOL_RESULTS = frozenset({"tool", "function"})
"""The ``role`` of a chat message whose ``content`` is a tool's result."""

_DATA_URL = re.compile(r"data:(?:[\w.+-]+/[\w.+-]+)?(?:;[\w.+-]+=[^;,]*)*;base64,", re.I)
_BASE64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_\r\n"
"""Base64's alphabet, URL-safe variant and line breaks included."""


def _all_base64(text: str, start: int = 0) -> bool:
    """Whether ``text[start:]`` holds only base64 characters (~0.7 ms a MB, in C)."""
    return text.isascii() and not text[start:].encode("ascii").translate(None, _BASE64)


def data_url(text: str) -> bool:
    """Whether ``text`` is a base64 ``data:`` URL (``data:image/png;base64,iVBOR...``)."""
    if not text.startswith("data:"):
        return False
    header = _DATA_URL.match(text)
    return header is not None and _all_base64(text, header.end())


def _number(value: Any) -> str | None:
    """The decimal text scanned for an integer of the client's own data (``{"card":
    4111111111111111}``: the detectors read text, and a number holds a card, a phone number or
    an SSN as well as a string does), without its sign; ``None`` for anything else (a float,
    a bool, a number too short to hold a value: ``_MIN_NUMBER``)."""
    if type(value) is int and (value >= _MIN_NUMBER or value <= -_MIN_NUMBER):
        return str(abs(value))
    return None


def _decoded(node: dict[str, Any], key: str, value: Any, depth: int,
             part: bool = False) -> tuple[str, Any, str] | str | None:
    """The JSON document ``node[key]`` holds, where it is a tool call's ``arguments`` or a
    tool's result (a ``tool`` or ``function`` message's ``content``, a ``tool_result`` block's;
    ``part``: ``node`` is a text part of such a result's list of parts, ``key`` its ``text``)
    written with escapes (``json.dumps``' default writes ``j\\u00f6rg`` for ``jörg``; ``\\n``,
    ``\\/``): its text would hide a value from the detectors (``b\\u00fccher.de`` is no
    domain) and a placeholder put in it could break an escape. Its strings are then scanned
    decoded, as the client's own data, and a redacted one written back as JSON
    (``_encoded``). The document may follow a failed tool result's ``TOOL_ERROR`` marker and
    whitespace, and be a JSON string: returned as ``(head, document, tail)``, ``head`` and
    ``tail`` what stands around the JSON text. Fail closed: such a string that does not decode
    (not JSON, or nested deeper than the walk goes, ``_MAX_DEPTH`` from ``depth``, the depth of
    ``node``) is scanned as written, with its ``\\u`` (and ``\\/``) escapes decoded where that
    keeps it what it was (``_unescaped``): that copy is returned, a string, when it differs.
    ``None`` for a string without a backslash (read as it is: the detectors see what the model
    reads), and for anything else."""
    if not (type(value) is str and "\\" in value):
        return None
    if key == "text":
        if not (part and node.get("type") == "text"):
            return None
    elif key == "content" and node.get("role") not in _TOOL_RESULTS \
            and node.get("type") != "tool_result":
        return None
    rest = value[len(TOOL_ERROR):] if value.startswith(TOOL_ERROR) else value
    text = rest.strip()
    if text[:1] in ("{", "[", '"'):
        bound = _MAX_DEPTH - depth - 1  # the most nesting levels the walk reaches in it
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):  # not JSON, or nested past Python's own limit
            pass
        else:
            if text.count("[") + text.count("{") <= bound or not _deeper(document, bound):
                start = len(value) - len(rest.lstrip())
                return value[:start], document, value[start + len(text):]
    copy = _unescaped(value)
    return copy if copy != value else None


_ESCAPE = re.compile(r"\\\\|\\u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})"
                     r"|\\u([0-9a-fA-F]{4})|\\/")
"""A JSON string escape ``_unescaped`` reads: an escaped backslash (kept), a surrogate pair, a
``\\u`` escape, ``\\/``."""


def _unescape(match: re.Match[str]) -> str:
    high, low, code = match.group(1, 2, 3)
    if high is not None:
        return chr(0x10000 + ((int(high, 16) - 0xD800) << 10) + int(low, 16) - 0xDC00)
    if code is not None:
        char = int(code, 16)
        # Kept escaped: what would end a JSON string or break it (a quote, a backslash, a
        # control character), and a lone surrogate (no UTF-8 can carry it).
        return match[0] if char < 0x20 or char in (0x22, 0x5C) or 0xD800 <= char < 0xE000 \
            else chr(char)
    return "/" if match[0] == "\\/" else match[0]


def _unescaped(text: str) -> str:
    """``text`` with its ``\\u`` escapes and ``\\/`` decoded (``jane\\u0040example.com`` is
    ``jane@example.com`` to whoever reads it), but those that would end or break a JSON
    string: a JSON text stays JSON, and a placeholder (``<EMAIL_1>``) put in it keeps it so."""
    return _ESCAPE.sub(_unescape, text)


def _deeper(document: Any, bound: int) -> bool:
    """Whether ``document`` nests more than ``bound`` levels of objects and arrays."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict | list):
            if level > bound:
                return True
            stack.extend((item, level + 1) for item in (
                node.values() if isinstance(node, dict) else node))
    return False


def _encoded(document: Any, original: str) -> str:
    """``document`` (a redacted ``_decoded``) as JSON text, written as ``original`` was: with
    non-ASCII escaped if it had ``\\u`` escapes, compact if it had no ``": "``."""
    compact = '": ' not in original
    return json.dumps(document, ensure_ascii="\\u" in original,
                      separators=(",", ":") if compact else None)


def _result(node: dict[str, Any]) -> bool:
    """Whether ``node`` is a tool's result (its ``content``: ``_decoded``)."""
    return node.get("role") in _TOOL_RESULTS or node.get("type") == "tool_result"


def _skipped(kind: int, node: dict[str, Any], value: Any, depth: int) -> bool:
    """Whether a field's ``value`` (``kind``: its ``_KINDS``; ``depth``: its dict's) is not
    text to scan. Only for the wire format's own fields: nothing in the client's own data is
    skipped (``free`` in the walk)."""
    if kind == _SIGNED:
        return True
    if not isinstance(value, str):
        return False
    if kind == _NAME:
        return _LABEL.fullmatch(value) is not None
    if kind == _MODEL:
        return depth == 0  # the body's own model, which the gateway replaces
    if kind == _PAYLOAD:
        return (len(value) >= _MIN_PAYLOAD and node.get("type") != "text"
                and _all_base64(value))
    return False


def _signed(node: dict[str, Any], free: bool, blocks: bool) -> bool:
    """Whether ``node`` is a signed thinking block the walk leaves whole (see the docstring)."""
    return not (free or blocks) and node.get("type") in _SIGNED_TYPES


def texts(node: Any, depth: int = 0, free: bool = False,
          pairs: list[tuple[str, str]] | None = None, *, blocks: bool = False,
          parts: bool = False) -> Iterator[str]:
    """Every text part of ``node`` (string values and the client's own keys), in document
    order; ``free``: ``node`` is the client's own data (``metadata``, a key of its own), where
    nothing is skipped. ``pairs``: each key of the client's own data (a key not in ``FIELDS``,
    or any key inside such data) whose value is a string is added to it with that value
    (``{"api_key": "..."}``: a detector reads the value in its key's context, as it would read
    ``api_key: ...`` in text, ``Detector.keyed``). ``blocks``: signed thinking blocks are
    walked too. ``parts``: ``node`` is a tool result's list of content parts (their text is
    the result's: ``_decoded``)."""
    if isinstance(node, str):
        if not data_url(node):
            yield node
    elif isinstance(node, dict):
        if depth < _MAX_DEPTH and not _signed(node, free, blocks):
            for key, value in node.items():
                kind = _KINDS.get(key)
                if pairs is not None and (kind is None or free):
                    if isinstance(value, str):
                        pairs.append((key, value))
                    elif (number := _number(value)) is not None:
                        pairs.append((key, number))
                if kind is None:
                    yield key
                    yield from texts(value, depth + 1, True, pairs, blocks=blocks)
                elif free or (blocks and kind == _SIGNED) \
                        or not _skipped(kind, node, value, depth):
                    if key in _JSON_KEYS:
                        decoded = _decoded(node, key, value, depth, parts)
                        if isinstance(decoded, tuple):
                            yield from texts(decoded[1], depth + 1, True, pairs, blocks=blocks)
                            continue
                        if decoded is not None:
                            yield decoded  # the string as written, its escapes decoded
                            continue
                    yield from texts(value, depth + 1, free or kind == _OWN, pairs,
                                     blocks=blocks, parts=key == "content"
                                     and type(value) is list and _result(node))
    elif isinstance(node, list | tuple):
        if depth < _MAX_DEPTH:
            for item in node:
                yield from texts(item, depth + 1, free, pairs, blocks=blocks, parts=parts)
    elif free and (number := _number(node)) is not None:
        yield number


def rewrite(node: Any, change: Callable[[str], str], depth: int = 0,
            free: bool = False, *, blocks: bool = False, parts: bool = False) -> Any:
    """``node`` with each text part replaced by ``change(text)`` (walked as ``texts`` does;
    ``blocks``: signed thinking blocks too); ``node`` itself when nothing changed."""
    if isinstance(node, str):
        return node if data_url(node) else change(node)
    if isinstance(node, dict):
        return node if depth >= _MAX_DEPTH or _signed(node, free, blocks) \
            else _rewrite_dict(node, change, depth, free, blocks, parts)
    if isinstance(node, list | tuple) and depth < _MAX_DEPTH:
        items: list[Any] | None = None
        for i, value in enumerate(node):
            new = rewrite(value, change, depth + 1, free, blocks=blocks, parts=parts)
            if new is not value:
                if items is None:
                    items = list(node)
                items[i] = new
        if items is None:
            return node
        return tuple(items) if isinstance(node, tuple) else items
    if free and (number := _number(node)) is not None:
        # A number holding a value becomes its placeholder, a string: no number can stand
        # for ``<CREDIT_CARD_1>``, and the model reads it (and writes it back) as text.
        new = change(number)
        return node if new == number else new
    return node


def _rewrite_dict(node: dict[str, Any], change: Callable[[str], str], depth: int,
                  free: bool, blocks: bool, parts: bool) -> dict[str, Any]:
    out: dict[str, Any] | None = None
    for i, (key, value) in enumerate(node.items()):
        new_key, new = key, value
        kind = _KINDS.get(key)
        if kind is None:
            new_key = change(key)
            new = rewrite(value, change, depth + 1, True, blocks=blocks)
        elif free or (blocks and kind == _SIGNED) or not _skipped(kind, node, value, depth):
            decoded = _decoded(node, key, value, depth, parts) if key in _JSON_KEYS else None
            if isinstance(decoded, tuple):
                head, document, tail = decoded
                changed = rewrite(document, change, depth + 1, True, blocks=blocks)
                if changed is not document:
                    new = head + _encoded(changed, value) + tail
            elif decoded is not None:
                # Scanned as written with its escapes decoded: sent so where a value was found.
                copy = change(decoded)
                new = value if copy == decoded else copy
            else:
                new = rewrite(value, change, depth + 1, free or kind == _OWN, blocks=blocks,
                              parts=key == "content" and type(value) is list
                              and _result(node))
        if out is not None:
            out[new_key] = new
        elif new is not value or new_key != key:
            out = dict(islice(node.items(), i))  # the keys before, in order
            out[new_key] = new
    return node if out is None else out
