"""Error bodies in each upstream's dialect.

- ``vllm`` (``/v1/*`` and the vLLM extras), up to 0.10.0:
  ``{"object": "error", "message", "type", "param", "code": <status>}``; from 0.10.1:
  ``{"error": {"message", "type", "param", "code": <status>}}``. Types are vLLM's
  (``BadRequestError``, ``NotFoundError``...).
- ``azure`` (``/openai/deployments/*``): ``{"error": {"message", "type", "param", "code"}}`` with
  OpenAI's types (``invalid_request_error``, ``server_error``...).
- ``anthropic`` (``/v1/messages``): ``{"type": "error", "error": {"type", "message"}}``.
- ``replicate`` (``/v1/models/*``, ``/v1/deployments/*``, ``/v1/predictions*``): RFC 7807 problem
  details, ``{"title", "detail", "status"}``.
- ``cohere`` (``/v2/chat``, ``/v2/embed``): ``{"id", "message"}``.
- ``ai21`` (``/studio/v1/*``): FastAPI's ``{"detail": "<message>"}``; a 422 with a ``param``
  (the dotted field path) is ``{"detail": [{"loc": ["body", ...], "msg", "type"}]}``.
- ``tgi`` and ``tgi-chat`` (Hugging Face TGI, ``/tgi/*``): ``{"error", "error_type"}`` with TGI's
  lower-case types (``validation``, ``generation``, ``overloaded``); ``tei`` (``/tei/*``): the same
  shape with TEI's types as its server serializes them (``Validation``, ``Backend``...);
  ``hf-router`` (``/hf-router/*``), and a refused token on any of them (HF's proxy answers it):
  ``{"error": "<message>"}``.
- ``google`` (Gemini API ``/gemini/*``, Vertex AI ``/vertex/*``): ``{"error": {"code",
  "message", "status"}}`` with google.rpc status names (``INVALID_ARGUMENT``,
  ``RESOURCE_EXHAUSTED``...); a client error Google has no status for (413, 422...) is its 400
  ``INVALID_ARGUMENT`` (``google_error``); a ``kind`` that is no status name is the reason of a
  ``google.rpc.ErrorInfo`` detail (``API_KEY_INVALID``); a 429 carries a ``google.rpc.RetryInfo``.
  Mid-stream: ``data: {"error": {...}}`` and the stream ends.

- ``bedrock`` (``/bedrock/*``): AWS's ``{"message"}``; ``sagemaker`` (``/sagemaker/*``):
  ``{"Message"}``; the type travels in ``x-amzn-ErrorType`` (``aws_auth.aws_error_headers``).

Mid-stream, OpenAI-style dialects send ``data: {"error": {...}}`` then ``data: [DONE]``; Anthropic
sends an ``event: error`` frame; Cohere ends the stream with a ``message-end`` event whose
``finish_reason`` is ``ERROR`` and whose ``error`` carries the message; AI21 (whose streams are
vLLM's) sends vLLM's current frame; TGI's ``/generate_stream`` sends
``data:{"error", "error_type"}`` and its Messages API ``data: {"error": {"message",
"http_status_code"}}``, neither followed by ``[DONE]``. Bedrock sends an event-stream
``exception`` message (``internalServerException``...), SageMaker a ``ModelStreamError`` one.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

import orjson

from app.simulator.asgi import SimError

Dialect = Literal["vllm", "azure", "anthropic", "replicate", "cohere", "ai21", "tgi",
                  "tgi-chat", "tei", "hf-router", "bedrock", "sagemaker",
                  "google"]

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
                    402: "billing_error", 403: "permission_error", 404: "not_found_error",
                    413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
                    529: "overloaded_error"}


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


_REPLICATE_TITLES = {400: "Bad request", 401: "Unauthenticated", 403: "Forbidden",
                     404: "Not found", 422: "Input validation failed",
                     429: "Request was throttled"}


def _replicate(err: SimError) -> dict[str, Any]:
    title = err.kind or _REPLICATE_TITLES.get(err.status, "Internal server error"
                                              if err.status >= 500 else "Bad request")
    return {"title": title, "detail": err.message, "status": err.status}


def _cohere(err: SimError) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "message": err.message}


def _ai21(err: SimError) -> dict[str, Any]:
    if err.status != 422 or err.param is None:
        return {"detail": err.message}
    loc: list[str | int] = ["body"]
    loc.extend(int(part) if part.isdigit() else part for part in err.param.split("."))
    return {"detail": [{"loc": loc, "msg": err.message, "type": err.kind or "value_error"}]}


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


GOOGLE_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                 404: "NOT_FOUND", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
                 500: "INTERNAL", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE",
                 504: "DEADLINE_EXCEEDED"}
"""HTTP status -> the google.rpc status Google's APIs answer it with (google.rpc.Code's HTTP
mapping; the Gemini API's troubleshooting page lists 400 INVALID_ARGUMENT and
FAILED_PRECONDITION, 403, 404, 429, 500, 503 and 504)."""


def google_error(err: SimError) -> SimError:
    """``err`` as a Google API answers it: a client error with no google.rpc status (413, 422...)
    is 400, as Google answers an oversized request ("Request payload size exceeds the limit")
    or an invalid one; ``_google`` then names it INVALID_ARGUMENT."""
    if 400 <= err.status < 500 and err.status not in GOOGLE_STATUS:
        err.status = 400
    return err


def _google(err: SimError) -> dict[str, Any]:
    names = set(GOOGLE_STATUS.values())
    status = err.kind if err.kind in names else GOOGLE_STATUS.get(
        err.status, "INTERNAL" if err.status >= 500 else "INVALID_ARGUMENT")
    inner: dict[str, Any] = {"code": err.status, "message": err.message, "status": status}
    details: list[dict[str, Any]] = []
    if err.kind is not None and err.kind not in names:
        details.append({"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": err.kind, "domain": "googleapis.com"})
    if err.status == 429:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"})
    if details:
        inner["details"] = details
    return {"error": inner}


def error_body(dialect: Dialect, err: SimError, *, flat: bool) -> bytes:
    """The serialized error body; ``flat`` picks vLLM's pre-0.10.1 shape."""
    if dialect == "bedrock":
        return orjson.dumps({"message": err.message})
    if dialect == "sagemaker":
        return orjson.dumps({"Message": err.message})
    if dialect == "google":
        return orjson.dumps(_google(err))
    if dialect == "replicate":
        return orjson.dumps(_replicate(err))
    if dialect == "cohere":
        return orjson.dumps(_cohere(err))
    if dialect == "ai21":
        return orjson.dumps(_ai21(err))
    if dialect == "anthropic":
        return orjson.dumps(_anthropic(err))
    if dialect == "azure":
        return orjson.dumps(_openai(err))
    if dialect in ("tgi", "tgi-chat", "tei", "hf-router"):
        return orjson.dumps(_hugging_face(dialect, err))
    return orjson.dumps(_vllm(err, flat=flat))


def stream_error_frames(dialect: Dialect, err: SimError, *, flat: bool) -> list[bytes]:
    """The frames that report ``err`` inside an already-started event stream."""
    if dialect in ("bedrock", "sagemaker"):
        return [aws_stream_exception(dialect, err)]
    if dialect == "google":
        return [b"data: " + orjson.dumps(_google(err)) + b"\r\n\r\n"]
    if dialect == "anthropic":
        return [b"event: error\ndata: " + orjson.dumps(_anthropic(err)) + b"\n\n"]
    if dialect == "replicate":
        return [b"event: error\ndata: " + orjson.dumps({"detail": err.message}) + b"\n\n",
                b'event: done\ndata: {"reason":"error"}\n\n']
    if dialect == "cohere":
        end = {"type": "message-end", "delta": {"finish_reason": "ERROR", "error": err.message}}
        return [b"event: message-end\ndata: " + orjson.dumps(end) + b"\n\n"]
    if dialect in ("tgi", "tei"):
        return [b"data:" + orjson.dumps(_hugging_face(dialect, err)) + b"\n\n"]
    if dialect == "tgi-chat":
        return [b"data: " + orjson.dumps({"error": {"message": err.message,
                                                    "http_status_code": err.status}}) + b"\n\n"]
    payload = _openai(err) if dialect in ("azure", "hf-router") \
        else _vllm(err, flat=flat and dialect != "ai21")
    inner = {"error": payload} if "error" not in payload else payload
    return [b"data: " + orjson.dumps(inner) + b"\n\n", b"data: [DONE]\n\n"]


_BEDROCK_STREAM_ERRORS = {400: "validationException", 429: "throttlingException",
                          503: "serviceUnavailableException", 424: "modelStreamErrorException"}


def aws_stream_exception(dialect: Dialect, err: SimError) -> bytes:
    """An AWS event-stream ``exception`` message: Bedrock's members are lower camel case
    (``internalServerException``), SageMaker's ``ModelStreamError`` carries an ``ErrorCode``."""
    from app.simulator import aws_eventstream

    if dialect == "sagemaker":
        return aws_eventstream.exception("ModelStreamError", orjson.dumps(
            {"Message": err.message, "ErrorCode": str(err.status)}))
    kind = _BEDROCK_STREAM_ERRORS.get(err.status, "internalServerException")
    return aws_eventstream.exception(kind, orjson.dumps({"message": err.message}))
