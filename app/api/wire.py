"""Bytes in and out: JSON bodies bounded in nesting, strict parsing into request models, the
response headers of a call (its call id and the client's request id among them).

(Just past 400 lines: parsing and its error wording belong together, each refusal's message
beside the check that makes it.)"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Sequence
from typing import Any, TypeVar, get_args

import orjson
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from app import errors
from app.limits import Header
from app.pipeline import ModelCall

M = TypeVar("M", bound=BaseModel)

# Parts pydantic adds to an error's location for union members and validators, not field names.
_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "none", "function-after",
              "function-before", "function-wrap", "json-or-python", "typed-dict",
              "function-tool", "custom-tool", "function-call", "custom-call"}


def empty_body() -> errors.InvalidRequest:
    return errors.InvalidRequest("The request body is empty; send a JSON object.")


def body_not_json(reason: object) -> errors.InvalidRequest:
    return errors.InvalidRequest(f"The request body is not valid JSON: {reason}")


def body_not_object(hint: str = "") -> errors.InvalidRequest:
    return errors.InvalidRequest(f"The request body must be a JSON object{hint}.")


def check_utf8(raw: bytes) -> None:
    """400 when ``raw`` is not UTF-8, saying at which byte (JSON must be sent as UTF-8): a
    model call's body (``parse_object``) and a guarded FastAPI route's (``app.api.guard``)."""
    try:
        raw.decode()
    except UnicodeDecodeError as bad:
        raise errors.InvalidRequest(
            f"The request body is not valid UTF-8 (at byte {bad.start}); JSON must be sent "
            "as UTF-8.") from None


_PARSER_DEPTH = "depth limit exceeded"
"""orjson's message for a document nested past its limit, ``_PARSER_MAX_DEPTH`` levels."""
_PARSER_INFINITY = "number is infinity when parsed as double"
"""orjson's message for a number past a double's range (a 400-digit integer, ``1e400``)."""
_PARSER_MAX_DEPTH = 1024


def parse_object(raw: bytes, *, max_depth: int) -> dict[str, Any]:
    """The request body as a JSON object; 400 when it is empty, not UTF-8, not JSON, not an
    object, or nested deeper than ``max_depth`` levels (the object itself is level 1; code
    ``nesting_too_deep``, ``param`` the path of the first value too deep, or none past the
    1,024 levels the JSON parser reads)."""
    if not raw:
        raise empty_body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        check_utf8(raw)  # orjson's own words point at the wrong place
        if exc.msg == _PARSER_DEPTH:
            raise _nests_too_deep(max_depth) from None
        if exc.msg == _PARSER_INFINITY:
            raise _number_too_large(raw) from None
        raise body_not_json(exc) from None
    if not isinstance(body, dict):
        raise body_not_object()
    # Every level opens with a bracket, so a body with few brackets (in strings or not) cannot
    # be too deep: counting them is C-speed, and spares nearly every request the walk.
    if raw.count(b"{") + raw.count(b"[") > max_depth and _too_deep(body, max_depth):
        raise _nests_too_deep(max_depth, _deep_path(body, max_depth))
    return body


GUARDED_MAX_DEPTH = 512
"""How deep a body of ``POST /v1/feedback`` or the admin API may nest (``check_depth``): far
past any they take (a prompt version's ``json`` default nests at most 64 levels, inside five:
one deeper, even 300 levels, gets the prompt's own 400 naming the default), and short of the
~990 at which FastAPI's parser (Python's ``json``) hits the recursion limit and says only
"There was an error parsing the body"."""


def check_depth(raw: bytes, *, max_depth: int) -> None:
    """A 400 ``nesting_too_deep`` when the JSON in ``raw`` nests deeper than ``max_depth``
    levels, as ``parse_object`` words it; a body that is not JSON is left to its parser."""
    if raw.count(b"{") + raw.count(b"[") <= max_depth:
        return
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if exc.msg == _PARSER_DEPTH:
            raise _nests_too_deep(max_depth) from None
        return
    if isinstance(body, dict | list) and _too_deep(body, max_depth):
        raise _nests_too_deep(max_depth, _deep_path(body, max_depth))


def _nests_too_deep(max_depth: int, where: str | None = None) -> errors.InvalidRequest:
    if where is None:
        # orjson stops at 1,024 levels, past any max_depth, before any path can be known: the
        # limit's own error, without the path.
        return errors.InvalidRequest(
            f"The request body nests deeper than {max_depth} levels (deeper than the "
            f"{_PARSER_MAX_DEPTH} the JSON parser reads).", code="nesting_too_deep")
    return errors.InvalidRequest(
        f"The request body nests deeper than {max_depth} levels (at '{where}').",
        param=where or None, code="nesting_too_deep")


def _number_too_large(raw: bytes) -> errors.InvalidRequest:
    """The 400 for valid JSON holding a number past a double's range, which orjson cannot
    read: naming the first such value's path where Python's parser (slower, run on this error
    only) reads the body, in OpenAI's words for a value past its bounds."""
    where: tuple[str | int, ...] | None = None
    # past Python's digit limit (4,300), or nested too deep for its parser: no path
    with contextlib.suppress(ValueError, RecursionError):
        where = _huge_number(json.loads(raw))
    if where is None:
        return errors.InvalidRequest(
            "The request body holds a number too large to read (JSON numbers must be within "
            "+-1.8e308).", code="invalid_value")
    param = _path_text(where)
    return errors.InvalidRequest(f"Invalid value for '{param}': number too large.",
                                 param=param, code="integer_above_max_value")


def _huge_number(body: Any) -> tuple[str | int, ...] | None:
    """The path of the first number in ``body`` that no double holds (an integer past
    ~1.8e308, a float read as infinity), in document order; iterative."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(body, ())]
    while stack:
        value, path = stack.pop()
        if type(value) is dict or type(value) is list:
            items = value.items() if type(value) is dict else enumerate(value)
            stack.extend(reversed([(child, (*path, key)) for key, child in items]))
        elif type(value) is float and math.isinf(value):
            return path
        elif type(value) is int:
            try:
                float(value)
            except OverflowError:
                return path
    return None


def _too_deep(body: dict[str, Any] | list[Any], limit: int) -> bool:
    """Whether a container sits deeper than ``limit`` levels. Iterative, one level at a time
    (no recursion limit to hit), visiting containers only."""
    level: list[Any] = [body]
    for _ in range(limit):
        below: list[Any] = []
        add = below.append
        for value in level:
            if type(value) is dict:
                children = value.values()
            else:
                children = value
                if len(value) > 16:
                    # A long list of numbers (token ids) holds no container; sum() says so at C
                    # speed and raises TypeError at anything else (3-5x faster than the loop).
                    try:
                        sum(value)
                        continue
                    except TypeError:
                        pass
            for child in children:
                if type(child) is dict or type(child) is list:
                    add(child)
        if not below:
            return False
        level = below
    return True


_MAX_KEY = 40
_MAX_PATH = 240


def _deep_path(body: dict[str, Any] | list[Any], limit: int) -> str:
    """The path (``a.b[0].c``) of the first container, in document order, deeper than ``limit``
    levels; long keys and long paths are cut (the path is echoed in the error and stored)."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(body, ())]
    while stack:
        value, path = stack.pop()
        if len(path) >= limit:
            return _path_text(path)
        items = value.items() if type(value) is dict else enumerate(value)
        children = [(child, (*path, key)) for key, child in items
                    if type(child) is dict or type(child) is list]
        stack.extend(reversed(children))
    return ""  # not reached: only called after _too_deep found one


def _path_text(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = part if len(part) <= _MAX_KEY else part[:_MAX_KEY] + "..."
            out += f".{key}" if out else key
        if len(out) > _MAX_PATH:
            return out[:_MAX_PATH] + "..."
    return out


def _param(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in part or part in _TYPE_TAGS:
            continue
        else:
            out += f".{part}" if out else part
    return out


def parse(model: type[M], body: dict[str, Any]) -> M:
    """Validate ``body`` as ``model``; ``InvalidRequest`` naming the first offending field.

    A top-level null stands for an absent field (OpenAI's spec marks the optional fields
    nullable): it is removed from ``body``, so no upstream receives it; a required field the
    spec lets be null takes the value the model's ``NULL_MEANS`` gives it."""
    if None in body.values():
        _drop_nulls(model, body)
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = _telling(exc.errors(include_url=False))
        param = _param(tuple(first["loc"]))
        if first["type"] == "missing":
            message = f"Missing required parameter: '{param}'."
        elif _past_int64(first):
            # an integer too long for the JSON parser's 64 bits, read as a float: pydantic
            # says "should be a valid integer", which the client sent (the parser reads
            # integers from -2**63 to 2**64 - 1)
            above = first["input"] > 0
            bound = f"at most {2 * _INT64 - 1}" if above else f"at least {-_INT64}"
            raise errors.InvalidRequest(
                f"Invalid value for '{param}': integer too {'large' if above else 'small'} "
                f"({bound}).", param=param or None,
                code=f"integer_{'above_max' if above else 'below_min'}_value") from None
        else:
            message = f"Invalid value for '{param}': {errors.problem_message(first)}."
        raise errors.InvalidRequest(message, param=param or None,
                                    code=_code(model, first)) from None


_INT64 = 2 ** 63


def _past_int64(problem: ErrorDetails) -> bool:
    """Whether ``problem`` is pydantic's refusal of a whole number past 64 bits as an integer
    (the JSON parser reads integers past 64 bits as floats, which pydantic converts within
    64 bits only)."""
    value = problem.get("input")
    return (problem["type"] == "int_type" and type(value) is float and math.isfinite(value)
            and value.is_integer() and abs(value) >= _INT64)


_BOUNDS = {"greater_than": "below_min_value", "greater_than_equal": "below_min_value",
           "less_than": "above_max_value", "less_than_equal": "above_max_value"}
"""pydantic's range problems, as the end of OpenAI's codes for them."""
_WRONG_TYPE = ("_type", "_parsing", "int_from_float", "is_instance_of")
"""The ends of pydantic's problem types that say the value has the wrong type."""


def _code(model: type[BaseModel], problem: ErrorDetails) -> str:
    """OpenAI's error code for a validation problem: ``missing_required_parameter``,
    ``invalid_type``, ``integer_above_max_value`` (``decimal_...`` for a number field:
    ``temperature``, ``logit_bias``; ``..._below_min_value``), else ``invalid_value``."""
    kind = problem["type"]
    if kind == "missing":
        return "missing_required_parameter"
    if kind.endswith(_WRONG_TYPE):
        return "invalid_type"
    bound = _BOUNDS.get(kind)
    if bound is None:
        return "invalid_value"
    field = model.model_fields.get(str(problem["loc"][0])) if problem["loc"] else None
    decimal = isinstance(problem["input"], float) or (
        field is not None and _mentions_float(field.annotation))
    return f"{'decimal' if decimal else 'integer'}_{bound}"


def _mentions_float(annotation: Any) -> bool:
    """Whether ``float`` is in a field's type (``Annotated[float, ...] | None``)."""
    return annotation is float or any(_mentions_float(a) for a in get_args(annotation))


def _telling(problems: list[ErrorDetails]) -> ErrorDetails:
    """The problem to report: the first, unless it only says a union's branch has another type
    (``str | list[...]``: "should be a valid string") while a branch the value has the type of
    says what is wrong with it (a bound it breaks; ``stop``'s count of strings is checked
    before validation, as OpenAI words it: ``app.schemas``)."""
    first = problems[0]
    if not first["type"].endswith("_type"):
        return first
    field = first["loc"][:1]
    return next((p for p in problems if p["loc"][:1] == field
                 and not p["type"].endswith("_type")), first)


def _drop_nulls(model: type[BaseModel], body: dict[str, Any]) -> None:
    fields = model.model_fields
    means: dict[str, Any] = getattr(model, "NULL_MEANS", {})
    for name in [k for k, v in body.items() if v is None]:
        if name in means:
            body[name] = means[name]
        elif name not in fields or not fields[name].is_required():
            del body[name]


def id_headers(call: ModelCall) -> dict[str, str]:
    """The call id, and the client's request id as it sent it (the call id when it sent none;
    the record may store it screened: ``ModelCall.request_id``)."""
    record = call.record
    return {"x-request-id": call.request_id or record.id, "x-switchboard-call-id": record.id}


def call_headers(call: ModelCall) -> dict[str, str]:
    """The ``x-request-id`` and ``x-switchboard-*`` headers known when a response starts (the
    config version that serves the call among them). Not the headers the pipeline's stages
    added (``ModelCall.headers``): the response adds those as they are."""
    record = call.record
    headers = id_headers(call)
    headers["x-switchboard-config-version"] = call.snapshot.version
    if record.variant is not None:
        headers["x-switchboard-variant"] = f"{record.experiment}/{record.variant}"
    if record.provider is not None:
        headers["x-switchboard-provider"] = record.provider
    if record.target_model is not None:
        headers["x-switchboard-target-model"] = record.target_model
    headers["x-switchboard-overhead-ms"] = f"{record.overhead_of(record.elapsed_ms()):.3f}"
    return headers


class JSONReply(Response):
    """A JSON response whose raw headers are built directly (Starlette's header handling showed
    up in the hot path's profile)."""

    def __init__(self, content: bytes, *, headers: dict[str, str], status: int = 200,
                 raw: Sequence[Header] = ()) -> None:
        """``raw``: headers already encoded (a call's ``ModelCall.headers``)."""
        # Deliberately not calling Response.__init__: everything it computes is set here.
        self.status_code = status
        self.body = content
        self.background = None
        self.raw_headers = [(b"content-type", b"application/json"),
                            (b"content-length", b"%d" % len(content))]
        self.raw_headers += [(k.encode("latin-1"), v.encode("latin-1"))
                             for k, v in headers.items()]
        self.raw_headers += raw


_RETRY_HEADERS = (b"retry-after", b"x-should-retry")
MAX_RETRY_AFTER_S = 3600
"""The longest ``retry-after`` passed on from an upstream: a provider's quota reset hours away
(or an HTTP date in the far future) is answered as an hour, after which the client asks again."""


def upstream_retry_after(exc: errors.GatewayError | None) -> int | None:
    """The ``retry-after`` to answer ``exc`` with when it is an upstream's 429 or 503 (529 for
    Anthropic) that said when to retry: its ``Retry-After`` (seconds or an HTTP date, as the
    provider read it, or Google's ``RetryInfo``) rounded up to whole seconds, from 1 to
    ``MAX_RETRY_AFTER_S``; else ``None``."""
    if not isinstance(exc, (errors.UpstreamRateLimited, errors.UpstreamUnavailable)):
        return None
    wait = exc.retry_after_s
    if wait is None or math.isnan(wait) or exc.status_code not in (429, 503, 529):
        return None
    return max(1, math.ceil(min(MAX_RETRY_AFTER_S, wait)))  # (capped first: it may be inf)


def error_reply(content: bytes, status: int, call: ModelCall | None, *,
                cause: errors.GatewayError | None = None) -> JSONReply:
    """An error's body as a model call's answer: its ids, the config version it ran on and the
    experiment variant it was assigned to (neither told to a caller whose key was refused) and
    the headers its stages added (``x-ratelimit-*``, ``retry-after``); a 429 says when to
    retry, unless it says not to (``x-should-retry: false``: a spent total budget, a request
    too large for a limit).
    ``cause``: the error answered; its own headers (``GatewayError.headers``) go out too, and
    an upstream's wait (``upstream_retry_after``) is passed on as ``retry-after``, else a 429
    says 1 second."""
    headers = {} if call is None else id_headers(call)
    raw: Sequence[Header] = () if call is None else call.headers
    if cause is not None and cause.headers:
        raw = [*raw, *cause.headers]
    if call is not None and status != 401:
        headers["x-switchboard-config-version"] = call.snapshot.version
        if call.record.variant is not None:  # assigned before it failed
            headers["x-switchboard-variant"] = f"{call.record.experiment}/{call.record.variant}"
    if not any(name in _RETRY_HEADERS for name, _ in raw):
        wait = upstream_retry_after(cause)
        if wait is not None:
            headers["retry-after"] = str(wait)
        elif status == 429:
            headers["retry-after"] = "1"
    return JSONReply(content, status=status, headers=headers, raw=raw)


def json_response(body: dict[str, Any], call: ModelCall) -> Response:
    headers = call_headers(call)
    record = call.record
    if record.cost_usd is not None:
        headers["x-switchboard-cost-usd"] = f"{record.cost_usd:.10f}".rstrip("0").rstrip(".")
    return JSONReply(orjson.dumps(body), headers=headers, raw=call.headers)
