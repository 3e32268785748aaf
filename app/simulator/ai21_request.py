"""Validating an AI21 chat completions request the way AI21's FastAPI server does.

The rules are AI21's ``ChatRequest`` (its OpenAPI document) plus the ranges its API reference
states: ``model`` a string (one of the served models when the simulator has a list),
``messages`` a list discriminated by ``role`` (``user``/``system``/``tool`` need a string
``content``, ``tool`` a ``tool_call_id``; ``assistant`` content is optional, its ``tool_calls``
``{"id", "function": {"name", "arguments"}}``), ``n`` 1..16 and 1 when streaming,
``max_tokens`` 0..4096, ``temperature`` 0..2, ``top_p`` above 0 and at most 1, ``stop`` a
string or a list of strings, ``tools`` functions whose ``parameters`` have ``properties``,
``response_format`` ``text`` or ``json_object``, ``documents`` objects with a string
``content``. Fields AI21 does not define are ignored, as FastAPI's default models ignore them.

A violation is a 422 whose body is FastAPI's ``{"detail": [{"loc": ["body", ...], "msg",
"type"}]}`` (pydantic v1 wording, as AI21's schema shows no ``input``/``url`` keys); the
simulator reports the first violation it finds, where FastAPI lists all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.simulator.asgi import SimError

ROLES = ("user", "assistant", "tool", "system")
MAX_N = 16
MAX_TOKENS = 4096


@dataclass(frozen=True, slots=True)
class AI21Request:
    """The parts of a valid request the simulator acts on."""

    model: str
    messages: list[dict[str, Any]]
    n: int
    max_tokens: int | None
    stops: tuple[str, ...]
    stream: bool
    tools: list[dict[str, Any]]
    response_format: dict[str, Any] | None


def invalid(loc: str, msg: str, kind: str) -> SimError:
    """A 422 for the field at ``loc`` (dotted, list indexes as numbers: ``messages.0.role``)."""
    return SimError(422, msg, kind=kind, param=loc)


def _missing(loc: str) -> SimError:
    return invalid(loc, "field required", "value_error.missing")


def _string(value: Any, loc: str) -> str:
    if value is None:
        raise _missing(loc)
    if not isinstance(value, str):
        raise invalid(loc, "str type expected", "type_error.str")
    return value


def _number(value: Any, loc: str, *, low: float, high: float, above: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(loc, "value is not a valid float", "type_error.float")
    if value < low or (above and value == low):
        word = "greater than" if above else "greater than or equal to"
        raise invalid(loc, f"ensure this value is {word} {low:g}",
                      "value_error.number.not_gt" if above else "value_error.number.not_ge")
    if value > high:
        raise invalid(loc, f"ensure this value is less than or equal to {high:g}",
                      "value_error.number.not_le")
    return value


def _integer(value: Any, loc: str, *, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(loc, "value is not a valid integer", "type_error.integer")
    _number(value, loc, low=low, high=high)
    return value


def _list(value: Any, loc: str) -> list[Any]:
    if not isinstance(value, list):
        raise invalid(loc, "value is not a valid list", "type_error.list")
    return value


def _dict(value: Any, loc: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(loc, "value is not a valid dict", "type_error.dict")
    return value


def _message(value: Any, loc: str) -> dict[str, Any]:
    message = _dict(value, loc)
    role = message.get("role")
    if role not in ROLES:
        raise invalid(f"{loc}.role", "No match for discriminator 'role' and value "
                      f"{role!r} (allowed values: {', '.join(map(repr, ROLES))})",
                      "value_error.discriminated_union.invalid_discriminator")
    if role == "assistant":
        if message.get("content") is not None:
            _string(message["content"], f"{loc}.content")
        for i, call in enumerate(_list(message.get("tool_calls") or [],
                                       f"{loc}.tool_calls")):
            where = f"{loc}.tool_calls.{i}"
            _string(_dict(call, where).get("id"), f"{where}.id")
            function = _dict(call.get("function"), f"{where}.function")
            _string(function.get("name"), f"{where}.function.name")
            _string(function.get("arguments"), f"{where}.function.arguments")
        return message
    _string(message.get("content"), f"{loc}.content")
    if role == "tool":
        _string(message.get("tool_call_id"), f"{loc}.tool_call_id")
    return message


def _tools(value: Any) -> list[dict[str, Any]]:
    tools = _list(value, "tools")
    for i, tool in enumerate(tools):
        where = f"tools.{i}"
        if _dict(tool, where).get("type") != "function":
            raise invalid(f"{where}.type", "unexpected value; permitted: 'function'",
                          "value_error.const")
        function = _dict(tool.get("function"), f"{where}.function")
        _string(function.get("name"), f"{where}.function.name")
        parameters = function.get("parameters")
        if parameters is not None:
            parameters = _dict(parameters, f"{where}.function.parameters")
            if parameters.get("type", "object") != "object":
                raise invalid(f"{where}.function.parameters.type",
                              "unexpected value; permitted: 'object'", "value_error.const")
            _dict(parameters.get("properties"), f"{where}.function.parameters.properties")
    return tools


def _stops(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return tuple(value)
    raise invalid("stop", "str type expected", "type_error.str")


def _documents(value: Any) -> None:
    for i, document in enumerate(_list(value, "documents")):
        _string(_dict(document, f"documents.{i}").get("content"), f"documents.{i}.content")


def _response_format(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    fmt = _dict(value, "response_format")
    if fmt.get("type") not in ("text", "json_object"):
        raise invalid("response_format.type", "value is not a valid enumeration member; "
                      "permitted: 'text', 'json_object'", "type_error.enum")
    return fmt


def read_request(body: dict[str, Any], *, models: frozenset[str]) -> AI21Request:
    """The request, or the 422 for its first violation."""
    model = _string(body.get("model"), "model")
    if models and model not in models:
        raise invalid("model", "value is not a valid enumeration member; permitted: "
                      + ", ".join(repr(m) for m in sorted(models)), "type_error.enum")
    raw = body.get("messages")
    if raw is None:
        raise _missing("messages")
    messages = [_message(m, f"messages.{i}") for i, m in enumerate(_list(raw, "messages"))]
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise invalid("stream", "value could not be parsed to a boolean", "type_error.bool")
    n = _integer(body.get("n", 1), "n", low=1, high=MAX_N)
    if stream and n != 1:
        raise invalid("n", "n must be 1 when stream is true", "value_error")
    max_tokens = body.get("max_tokens")
    if max_tokens is not None:
        _integer(max_tokens, "max_tokens", low=0, high=MAX_TOKENS)
    if body.get("temperature") is not None:
        _number(body["temperature"], "temperature", low=0, high=2)
        if n > 1 and body["temperature"] == 0:
            raise invalid("temperature", "temperature must be above 0 when n > 1",
                          "value_error")
    if body.get("top_p") is not None:
        _number(body["top_p"], "top_p", low=0, high=1, above=True)
    tools = _tools(body["tools"]) if body.get("tools") is not None else []
    if body.get("documents") is not None:
        _documents(body["documents"])
    return AI21Request(model=model, messages=messages, n=n, max_tokens=max_tokens,
                       stops=_stops(body.get("stop")), stream=stream, tools=tools,
                       response_format=_response_format(body.get("response_format")))
