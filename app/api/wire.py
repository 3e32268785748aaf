"""Bytes in and out: bounded JSON bodies, strict parsing into request models, response headers."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from app import errors
from app.calllog import CallRecord

M = TypeVar("M", bound=BaseModel)

# Parts pydantic adds to an error's location for union members and validators, not field names.
_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "none", "function-after",
              "function-before", "function-wrap", "json-or-python", "typed-dict"}


def parse_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object; 400 when it is empty, not JSON, or not an object."""
    if not raw:
        raise errors.InvalidRequest("The request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise errors.InvalidRequest("The request body must be a JSON object.")
    return body


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
    """Validate ``body`` as ``model``; ``InvalidRequest`` naming the first offending field."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        param = _param(tuple(first["loc"]))
        if first["type"] == "missing":
            message = f"Missing required parameter: '{param}'."
        else:
            message = f"Invalid value for '{param}': {first['msg']}."
        raise errors.InvalidRequest(message, param=param or None,
                                    code="invalid_value") from None


def call_headers(record: CallRecord) -> dict[str, str]:
    """The ``x-switchboard-*`` headers known when a response starts."""
    headers = {"x-request-id": record.id}
    if record.provider is not None:
        headers["x-switchboard-provider"] = record.provider
    if record.target_model is not None:
        headers["x-switchboard-target-model"] = record.target_model
    overhead = record.elapsed_ms() - record.upstream_ms
    headers["x-switchboard-overhead-ms"] = f"{max(0.0, overhead):.3f}"
    return headers


class JSONReply(Response):
    """A JSON response whose raw headers are built directly (Starlette's header handling showed
    up in the hot path's profile)."""

    def __init__(self, content: bytes, *, headers: dict[str, str], status: int = 200) -> None:
        # Deliberately not calling Response.__init__: everything it computes is set here.
        self.status_code = status
        self.body = content
        self.background = None
        self.raw_headers = [(b"content-type", b"application/json"),
                            (b"content-length", str(len(content)).encode())]
        self.raw_headers += [(k.encode("latin-1"), v.encode("latin-1"))
                             for k, v in headers.items()]


def json_response(body: dict[str, Any], record: CallRecord) -> Response:
    headers = call_headers(record)
    if record.cost_usd is not None:
        headers["x-switchboard-cost-usd"] = f"{record.cost_usd:.10f}".rstrip("0").rstrip(".")
    return JSONReply(orjson.dumps(body), headers=headers)
