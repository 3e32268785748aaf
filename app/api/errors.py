"""Every error leaves the gateway in OpenAI's shape: ``{"error": {message, type, param, code}}``."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from app import errors
from app.api import head
from app.api.wire import JSONReply, body_not_json, body_not_object, empty_body, error_reply
from app.inbound.anthropic import error_body as anthropic_error_body
from app.pipeline import ModelCall

log = logging.getLogger("switchboard.api")

_BY_STATUS: dict[int, type[errors.GatewayError]] = {
    401: errors.AuthenticationFailed, 403: errors.PermissionDenied, 404: errors.NotFound,
    413: errors.BodyTooLarge,
}


def error_response(exc: errors.GatewayError, *, call: ModelCall | None = None) -> Response:
    """``exc`` as the client gets it; a model call's ids and the headers its stages added
    (``x-ratelimit-*``, ``retry-after``), and ``exc.headers``, go in its headers."""
    return error_reply(orjson.dumps(exc.body()), exc.status_code, call, cause=exc)


def last_resort(path: str | None) -> errors.GatewayError:
    """Log the exception being handled (an unexpected one) and return the 500 to answer."""
    log.exception("unhandled error on %s", path)
    return errors.GatewayError("The gateway had an internal error.")


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.GatewayError)
    return error_response(exc)


SERVED = ("POST /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/messages, "
          "/v1/messages/count_tokens, /v1/feedback; GET /v1/models, /v1/models/{model}")
"""Every route under ``/v1`` (tests/api/test_messages.py checks it against the app's routes)."""


def unsupported(method: str, path: str) -> Response:
    """The 404 of a path no route serves, saying so and what is served; in Anthropic's error
    shape under ``/v1/messages``, OpenAI's elsewhere."""
    # Only API paths are echoed: others (/docs, /openapi.json with the reference off) are
    # not even named, so a probe learns nothing of what is turned off.
    what = f"{method} {path[:200]}" if path.startswith("/v1/") else "this path"
    exc = errors.NotFound(f"Switchboard does not serve {what}. It serves {SERVED}, and its "
                          "admin API under /admin.", code="unsupported_endpoint")
    if path.startswith("/v1/messages"):
        return JSONReply(orjson.dumps(anthropic_error_body(exc)), status=404, headers={})
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's and FastAPI's own ``HTTPException``s in OpenAI's shape, their headers kept."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404 and exc.detail == "Not Found":  # no route matched
        return unsupported(request.method, request.url.path)
    if exc.status_code == 405:
        return not_allowed(request, exc)
    kind = _BY_STATUS.get(exc.status_code, errors.InvalidRequest)
    return JSONReply(orjson.dumps(kind(str(exc.detail), status=exc.status_code).body()),
                     status=exc.status_code, headers=dict(exc.headers or {}))


def not_allowed(request: Request, exc: HTTPException) -> Response:
    """The 405 of a path served, but not with this method: ``Allow`` lists every method the
    path takes (as RFC 9110 requires; ``HEAD`` wherever ``GET``, ``app.api.head``), and so
    does the message; code ``method_not_allowed`` (Anthropic's error shape under
    ``/v1/messages``). Starlette's own ``Allow`` names only the methods of the first route that
    matched the path (``/admin/keys`` has one route for ``GET`` and another for ``POST``), so
    the app's routes are asked for each method."""
    allowed = head.allowed(request.app, request.scope)
    if not allowed:  # not expected: a 405 means some route took the path
        allowed = [m.strip() for m in (exc.headers or {}).get("Allow", "").split(",") if m]
    path = request.url.path
    exc_405 = errors.InvalidRequest(
        f"{request.method[:20]} is not allowed on {path[:200]}; it allows "
        f"{', '.join(allowed) or 'no method'}.", status=405, code="method_not_allowed")
    body = anthropic_error_body(exc_405) if path.startswith("/v1/messages") else exc_405.body()
    return JSONReply(orjson.dumps(body), status=405, headers={"allow": ", ".join(allowed)})


async def _validation_error(request: Request, exc: Exception) -> Response:
    """A FastAPI route's bad input (the admin API's): the body itself said in the data plane's
    words (``app.api.wire.parse_object``), else the first field's problem, named in the message
    and in ``param``."""
    assert isinstance(exc, RequestValidationError)
    return error_response(validation_problem(exc.errors(), body=exc.body))


def validation_problem(problems: Sequence[Any], *, body: Any = None) -> errors.GatewayError:
    """The 400 for FastAPI's validation ``problems`` (``RequestValidationError.errors()``) of a
    request whose parsed JSON body is ``body`` (read as JSON whatever its ``Content-Type``:
    ``app.api.guard``).

    The message names the field in the data plane's words (``app.api.wire.parse``: "Invalid
    value for 'rpm': ...", "Missing required parameter: 'name'."), and ``param`` is its path
    (``field_path``); a problem of no one field (a model's own check) is "Invalid request:
    ..." with ``param`` null."""
    first: dict[str, Any] = problems[0] if problems else {"loc": (), "msg": "invalid request"}
    loc, kind = tuple(first.get("loc", ())), first.get("type")
    if kind == "json_invalid":  # its loc ends with a character offset, not a field
        return body_not_json((first.get("ctx") or {}).get("error") or first["msg"])
    if loc == ("body",) and kind == "missing":
        return empty_body()
    if loc == ("body",) and kind in ("model_attributes_type", "dict_type"):
        return body_not_object()
    if kind == "string_unicode" and loc[:1] == ("body",):
        found = _surrogate_key(body)
        if found is not None:  # pydantic's location of such a key names it wrongly, or not
            where, key = found
            within = f"'{where}'" if where else "the request body"
            return errors.InvalidRequest(
                f"Invalid key {_quoted(key)} in {within}: it holds a lone surrogate "
                "(\\ud800-\\udfff), which is not a character.",
                param=where or None, code="invalid_value")
    param, bad_key = field_path(loc, body if loc[:1] == ("body",) else None,
                                missing=kind == "missing")
    problem = errors.problem_message(first)
    if not problem.endswith("."):
        problem += "."
    if not param:
        message = f"Invalid request: {problem}"
    elif bad_key is not None:
        message = f"Invalid key {_quoted(bad_key)} in '{param}': {problem}"
    elif kind == "missing":
        message = f"Missing required parameter: '{param}'."
    elif kind == "extra_forbidden":
        message = f"Unknown parameter: '{param}'."
    else:
        message = f"Invalid value for '{param}': {problem}"
    return errors.InvalidRequest(message, param=param or None,
                                 code="invalid_value")  # (the data plane's follow OpenAI's)


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_KEY = 40
"""Characters of a key a ``param`` shows; a longer one is cut, ``...`` after it."""
_KEY_PROBLEM = "[key]"
"""The part pydantic ends a location with when a dict's key, not its value, is wrong."""


def _quoted(key: str) -> str:
    """``key`` as a JSON string (control characters escaped), cut at ``_MAX_KEY``."""
    return json.dumps(key if len(key) <= _MAX_KEY else key[:_MAX_KEY] + "...")


def _surrogate_key(body: Any) -> tuple[str, str] | None:
    """The path of the first object (in document order) with a key holding a lone surrogate
    (JSON's ``\\ud800`` escapes can spell one; no UTF-8 encodes it), and that key; None when
    no key holds one. Iterative: a body may nest hundreds of levels."""
    stack: list[tuple[Any, str]] = [(body, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            for key in node:
                if isinstance(key, str) and not key.isascii() and not _encodes(key):
                    return path, key
            children = [(child, _joined(path, key)) for key, child in node.items()
                        if isinstance(child, dict | list)]
        elif isinstance(node, list):
            children = [(child, _joined(path, i)) for i, child in enumerate(node)
                        if isinstance(child, dict | list)]
        else:
            continue
        stack.extend(reversed(children))
    return None


def _encodes(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _joined(path: str, part: str | int) -> str:
    """``path`` and one more part, written as ``field_path`` writes them."""
    if isinstance(part, int):
        return f"{path}.{part}" if path else str(part)
    if _NAME.fullmatch(part):
        return f"{path}.{part}" if path else part
    return f"{path}[{_quoted(part)}]"


def field_path(loc: Sequence[int | str], body: Any, *,
               missing: bool = False) -> tuple[str, str | None]:
    """The ``param`` of a problem at pydantic's ``loc`` (its first part the request part:
    ``body``, ``query``, ``path``...), and the key itself when the problem is a dict key's.

    Names join with dots and list items are ``.0`` (``models.0``, ``messages.0.content``); a
    key that is not a plain name (empty, with a dot, a space, a quote...) is written as a JSON
    string in brackets (``metadata["a.b"]``, ``metadata[""]``), so every path reads one way.
    Walking ``body`` along ``loc`` tells the client's keys from the parts pydantic adds (the
    tags of union members), which are left out, but for the last when the problem is a
    ``missing`` field (not sent, by definition); with no body, every part is a name."""
    path, bad_key = "", None
    before = ""  # the path before the last part added to it: a bad key's dict
    node: Any = body
    parts = list(loc[1:])
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(part, int):
            before, path = path, f"{path}.{part}" if path else str(part)
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
            continue
        member = isinstance(node, dict) and part in node
        if body is not None and part == _KEY_PROBLEM and last and i and not member:
            bad_key, path = str(parts[i - 1]), before
            break
        before = path
        if body is not None and not member and not (last and missing):
            continue  # a union's tag
        if _NAME.fullmatch(part):
            path = f"{path}.{part}" if path else part
        else:
            path += f"[{_quoted(part)}]"
        node = node[part] if member else None
    return path, bad_key


async def _unexpected(request: Request, exc: Exception) -> Response:
    return error_response(last_resort(request.scope.get("path")))


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.GatewayError, _gateway_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
