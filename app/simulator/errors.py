"""Error bodies in each upstream's dialect.

- ``vllm`` (``/v1/*`` and the vLLM extras), up to 0.10.0:
  ``{"object": "error", "message", "type", "param", "code": <status>}``; from 0.10.1:
  ``{"error": {"message", "type", "param", "code": <status>}}``. Types are vLLM's
  (``BadRequestError``, ``NotFoundError``...).
- ``azure`` (``/openai/deployments/*``): ``{"error": {"message", "type", "param", "code"}}`` with
  OpenAI's types (``invalid_request_error``, ``server_error``...).
- ``anthropic`` (``/v1/messages``): ``{"type": "error", "error": {"type", "message"}}``.
- ``tgi`` and ``tgi-chat`` (Hugging Face TGI, ``/tgi/*``): ``{"error", "error_type"}`` with TGI's
  lower-case types (``validation``, ``generation``, ``overloaded``); ``tei`` (``/tei/*``): the same
  shape with TEI's types as its server serializes them (``Validation``, ``Backend``...);
  ``hf-router`` (``/hf-router/*``), and a refused token on any of them (HF's proxy answers it):
  ``{"error": "<message>"}``.

Mid-stream, OpenAI-style dialects send ``data: {"error": {...}}`` then ``data: [DONE]``; Anthropic
sends an ``event: error`` frame; TGI's ``/generate_stream`` sends ``data:{"error", "error_type"}``
and its Messages API ``data: {"error": {"message", "http_status_code"}}``, neither followed by
``[DONE]``.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

from app.simulator.asgi import SimError

Dialect = Literal["vllm", "azure", "anthropic", "tgi", "tgi-chat", "tei", "hf-router"]

_VLLM_TYPES = {400: "BadRequestError", 401: "AuthenticationError", 403: "PermissionDeniedError",
               404: "NotFoundError", 408: "RequestTimeoutError", 409: "ConflictError",
               413: "RequestEntityTooLargeError", 422: "UnprocessableEntityError",
               429: "RateLimitError", 500: "InternalServerError", 501: "NotImplementedError",
               503: "ServiceUnavailableError"}
_OPENAI_TYPES: dict[int, tuple[str, str | None]] = {
    401: ("invalid_request_error", "invalid_api_key"), 403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"), 429: ("requests", "rate_limit_exceeded"),
}
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                    403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                    429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}


def _vllm(err: SimError, *, flat: bool) -> dict[str, Any]:
    kind = err.kind or _VLLM_TYPES.get(err.status, "BadRequestError" if err.status < 500
                                       else "InternalServerError")
    inner = {"message": err.message, "type": kind, "param": err.param, "code": err.status}
    return {"object": "error", **inner} if flat else {"error": inner}


def _openai(err: SimError) -> dict[str, Any]:
    default = ("invalid_request_error", None) if err.status < 500 else ("server_error", None)
    kind, code = _OPENAI_TYPES.get(err.status, default)
    return {"error": {"message": err.message, "type": err.kind or kind, "param": err.param,
                      "code": code}}


def _anthropic(err: SimError) -> dict[str, Any]:
    default = "invalid_request_error" if err.status < 500 else "api_error"
    kind = err.kind or _ANTHROPIC_TYPES.get(err.status, default)
    return {"type": "error", "error": {"type": kind, "message": err.message}}


_TGI_TYPES = {400: "validation", 413: "validation", 422: "validation",
              424: "generation", 429: "overloaded"}
_TEI_TYPES = {400: "Empty", 413: "Validation", 422: "Validation", 424: "Backend",
              429: "Overloaded", 503: "Unhealthy"}


def _hugging_face(dialect: Dialect, err: SimError) -> dict[str, Any]:
    # A refused token is answered by HF's proxy in front of the endpoint, not by TGI/TEI.
    if dialect == "hf-router" or err.status == 401:
        return {"error": err.message}
    if dialect == "tei":
        kind = err.kind or _TEI_TYPES.get(err.status, "Backend")
    else:
        kind = err.kind or _TGI_TYPES.get(err.status, "validation" if err.status < 500
                                          else "incomplete_generation")
    return {"error": err.message, "error_type": kind}


def error_body(dialect: Dialect, err: SimError, *, flat: bool) -> bytes:
    """The serialized error body; ``flat`` picks vLLM's pre-0.10.1 shape."""
    if dialect == "anthropic":
        return orjson.dumps(_anthropic(err))
    if dialect == "azure":
        return orjson.dumps(_openai(err))
    if dialect in ("tgi", "tgi-chat", "tei", "hf-router"):
        return orjson.dumps(_hugging_face(dialect, err))
    return orjson.dumps(_vllm(err, flat=flat))


def stream_error_frames(dialect: Dialect, err: SimError, *, flat: bool) -> list[bytes]:
    """The frames that report ``err`` inside an already-started event stream."""
    if dialect == "anthropic":
        return [b"event: error\ndata: " + orjson.dumps(_anthropic(err)) + b"\n\n"]
    if dialect in ("tgi", "tei"):
        return [b"data:" + orjson.dumps(_hugging_face(dialect, err)) + b"\n\n"]
    if dialect == "tgi-chat":
        return [b"data: " + orjson.dumps({"error": {"message": err.message,
                                                    "http_status_code": err.status}}) + b"\n\n"]
    payload = _openai(err) if dialect in ("azure", "hf-router") else _vllm(err, flat=flat)
    inner = {"error": payload} if "error" not in payload else payload
    return [b"data: " + orjson.dumps(inner) + b"\n\n", b"data: [DONE]\n\n"]
