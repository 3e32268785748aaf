"""Google Cloud Vertex AI under ``/vertex``: the OAuth2 token endpoint a service account uses,
and the publisher-model methods under ``/vertex/v1/projects/{project}/locations/{location}/
publishers/google/models/{model}:{method}``.

- ``POST /vertex/token``: Google's OAuth2 token endpoint as google-auth's service-account flow
  meets it (the key JSON's ``token_uri``): a form with ``grant_type=urn:ietf:params:oauth:
  grant-type:jwt-bearer`` and ``assertion``, a JWT whose claims carry ``iss``, ``aud``,
  ``scope``, ``iat`` and ``exp``. The signature is not verified (the simulator has no public
  keys); its shape, grant and claims are. Answers ``{"access_token", "expires_in",
  "token_type": "Bearer"}``; refusals are Google's ``{"error", "error_description"}``
  (``unsupported_grant_type``, ``invalid_grant``, ``invalid_scope``), 400.
- Access tokens look like Google's (``ya29.`` + opaque text) but carry their expiry, signed with
  HMAC-SHA256 under the simulator's key, so any simulator process checks them without shared
  state. They last ``SimOptions.google_token_lifetime_s``.
- The model methods require ``Authorization: Bearer`` with such a token: none, a foreign or an
  expired one is Google's 401 ``UNAUTHENTICATED`` (its ``ErrorInfo`` reason
  ``CREDENTIALS_MISSING``, ``ACCESS_TOKEN_TYPE_UNSUPPORTED`` or ``ACCESS_TOKEN_EXPIRED``).
  ``generateContent`` and ``streamGenerateContent`` answer as the Gemini API's (``gemini``),
  with Vertex's ``createTime``; ``predict`` is the text-embeddings
  API: ``instances: [{"content", "task_type"?, "title"?}]`` (at most 250; one for
  ``gemini-embedding-*`` models; at most ``MAX_INPUT_TOKENS`` tokens in all), ``parameters:
  {"outputDimensionality"?, "autoTruncate"?}`` (the length defaults to the model's own,
  ``embeddings.MODEL_DIMENSIONS``); a text past ``MAX_TEXT_TOKENS`` is truncated to them
  (``truncated: true``, counted as read) under ``autoTruncate`` (the default), a 400 without,
  answered ``{"predictions": [{"embeddings": {"values", "statistics": {"truncated",
  "token_count"}}}], "metadata": {"billableCharacterCount"}}``.
- Claude: ``publishers/anthropic/models/{model}:rawPredict`` and ``:streamRawPredict``, the same
  token required (``vertex_anthropic``).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson

from app.simulator import gemini, vertex_anthropic
from app.simulator.asgi import Request, SimError, send_json
from app.simulator.core import Route, Sim, delay, faulted
from app.simulator.embeddings import dimensions_of, vector
from app.simulator.errors import google_error
from app.simulator.faults import read_knobs
from app.simulator.gemini_request import invalid
from app.usage import estimate_tokens

PREFIX = "/vertex/v1/projects/"
TOKEN_PATH = "/vertex/token"
ROUTE = Route("google")
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
SIGNING_KEY = b"switchboard-simulator-google-signing-key"
METHODS = ("generateContent", "streamGenerateContent", "predict")
PUBLISHER_METHODS = {"google": METHODS, "anthropic": vertex_anthropic.METHODS}
MAX_INPUT_TOKENS = 20_000
"""The input tokens one text-embeddings ``predict`` request may carry (Vertex's "Get text
embeddings" limits: more is a 400)."""
MAX_TEXT_TOKENS = 2048
"""The input tokens a text-embeddings model reads from one text (Vertex's limits for
``gemini-embedding-001`` and ``text-embedding-005`` alike)."""
UNAUTHENTICATED = ("Request had invalid authentication credentials. Expected OAuth 2 access "
                   "token, login cookie or other valid authentication credential. See "
                   "https://developers.google.com/identity/sign-in/web/devconsole-project.")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue(subject: str, *, lifetime_s: int, now: float | None = None) -> str:
    """An access token for ``subject`` that expires ``lifetime_s`` from ``now``."""
    expires = int(time.time() if now is None else now) + lifetime_s
    body = _b64(orjson.dumps({"sub": subject, "exp": expires, "jti": uuid.uuid4().hex}))
    signature = _b64(hmac.new(SIGNING_KEY, body.encode(), hashlib.sha256).digest())
    return f"ya29.{body}.{signature}"


@functools.lru_cache(maxsize=256)
def token_expiry(token: str) -> int | None:
    """The expiry of a token this simulator issued (None: not one). Pure, so memoized."""
    prefix, _, rest = token.partition(".")
    body, _, signature = rest.partition(".")
    if prefix != "ya29" or not body or not signature:
        return None
    expected = _b64(hmac.new(SIGNING_KEY, body.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, signature):
        return None
    try:
        claims = orjson.loads(_unb64(body))
    except (ValueError, orjson.JSONDecodeError):
        return None
    expires = claims.get("exp") if isinstance(claims, dict) else None
    return expires if isinstance(expires, int) else None


def check_bearer(req: Request) -> None:
    """Vertex's 401 for a missing, foreign or expired token."""
    scheme, _, token = req.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise SimError(401, UNAUTHENTICATED, kind="CREDENTIALS_MISSING")
    expires = token_expiry(token.strip())
    if expires is None:
        raise SimError(401, UNAUTHENTICATED, kind="ACCESS_TOKEN_TYPE_UNSUPPORTED")
    if time.time() >= expires:
        raise SimError(401, UNAUTHENTICATED, kind="ACCESS_TOKEN_EXPIRED")


async def _oauth_error(req: Request, error: str, description: str) -> None:
    await send_json(req.send, 400, orjson.dumps({"error": error,
                                                 "error_description": description}))


def _claims(assertion: str) -> dict[str, Any] | None:
    pieces = assertion.split(".")
    if len(pieces) != 3 or not all(pieces):
        return None
    try:
        header = orjson.loads(_unb64(pieces[0]))
        claims = orjson.loads(_unb64(pieces[1]))
    except (ValueError, orjson.JSONDecodeError):
        return None
    if not isinstance(header, dict) or header.get("alg") != "RS256" \
            or not isinstance(claims, dict):
        return None
    return claims


async def token(sim: Sim, req: Request, route: Route) -> None:
    """The OAuth2 token endpoint, JWT-bearer grant (see the module docstring)."""
    form = dict(parse_qsl(req.body.decode("utf-8", "replace"), keep_blank_values=True))
    grant = form.get("grant_type", "")
    if grant != JWT_BEARER:
        await _oauth_error(req, "unsupported_grant_type", f"Invalid grant_type: {grant}")
        return
    claims = _claims(form.get("assertion", ""))
    if claims is None:
        await _oauth_error(req, "invalid_grant", "Invalid JWT: Token must be a short-lived "
                           "token (60 minutes) and in a reasonable timeframe. Check your iat "
                           "and exp values in the JWT claim.")
        return
    now = time.time()
    issued, expires = claims.get("iat"), claims.get("exp")
    if not isinstance(issued, int | float) or not isinstance(expires, int | float) \
            or expires <= now or expires - issued > 3600 or not isinstance(claims.get("iss"),
                                                                           str):
        await _oauth_error(req, "invalid_grant", "Invalid JWT: Token must be a short-lived "
                           "token (60 minutes) and in a reasonable timeframe. Check your iat "
                           "and exp values in the JWT claim.")
        return
    if SCOPE not in str(claims.get("scope", "")).split():
        await _oauth_error(req, "invalid_scope", "Invalid OAuth scope or ID token audience "
                           "provided.")
        return
    lifetime = sim.options.google_token_lifetime_s
    await send_json(req.send, 200, orjson.dumps({
        "access_token": issue(claims["iss"], lifetime_s=lifetime, now=now),
        "expires_in": lifetime, "token_type": "Bearer"}))


def parse_path(path: str) -> tuple[str, str, str, str, str] | None:
    """(project, location, publisher, model, method) of a publisher-model path."""
    if not path.startswith(PREFIX):
        return None
    parts = path[len(PREFIX):].split("/")
    if len(parts) != 7 or parts[1] != "locations" or parts[3] != "publishers" \
            or parts[5] != "models":
        return None
    model, colon, method = parts[6].rpartition(":")
    if not colon or not model:
        return None
    return parts[0], parts[2], parts[4], model, method


def _extra() -> dict[str, Any]:
    return {"createTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}


async def predict(sim: Sim, req: Request, route: Route, *, model: str) -> None:
    """The text-embeddings ``predict``."""
    knobs = read_knobs(req)
    if await faulted(sim, req, knobs):
        return
    body = req.json_object()
    instances = body.get("instances")
    most = 1 if model.startswith("gemini-embedding") else 250
    if not isinstance(instances, list) or not instances:
        raise invalid("instances must be a non-empty list.")
    if len(instances) > most:
        raise invalid(f"Unable to submit request because {model} supports at most {most} "
                      "instances per request.")
    parameters = body.get("parameters") or {}
    dimensions = parameters.get("outputDimensionality") if isinstance(parameters, dict) \
        else None
    dimensions = dimensions or dimensions_of(model, sim.options.embedding_dimensions)
    most = gemini.largest_output(model)
    if not isinstance(dimensions, int) or not 1 <= dimensions <= most:
        raise invalid(f"outputDimensionality must be between 1 and {most} for {model}.")
    truncate = parameters.get("autoTruncate", True) if isinstance(parameters, dict) else True
    predictions = []
    tokens = chars = 0
    for i, instance in enumerate(instances):
        text = instance.get("content") if isinstance(instance, dict) else None
        if not isinstance(text, str):
            raise invalid(f"instances[{i}].content must be a string.")
        count = estimate_tokens(text)
        cut = count > MAX_TEXT_TOKENS
        if cut and truncate is False:
            raise invalid(f"Unable to submit request because the input token count is {count} "
                          f"but the model supports up to {MAX_TEXT_TOKENS}. Reduce the input "
                          "token count and try again.")
        count = min(count, MAX_TEXT_TOKENS)
        tokens += count
        chars += len(text.replace(" ", ""))
        predictions.append({"embeddings": {
            "values": list(vector(text, dimensions)),
            "statistics": {"truncated": cut, "token_count": count}}})
    if tokens > MAX_INPUT_TOKENS:
        raise invalid(f"Unable to submit request because the input token count is {tokens} but "
                      f"the model supports up to {MAX_INPUT_TOKENS}. Reduce the input token "
                      "count and try again.")
    if await delay(sim, req, knobs, prompt=tokens, completion=0, finish="stop"):
        await send_json(req.send, 200, orjson.dumps({
            "predictions": predictions, "metadata": {"billableCharacterCount": chars}}))


async def handle(sim: Sim, req: Request, route: Route) -> None:
    """Every ``/vertex/v1/projects/.../models/{model}:{method}`` call."""
    try:
        await _serve(sim, req, route)
    except SimError as err:
        raise google_error(err) from None


async def _serve(sim: Sim, req: Request, route: Route) -> None:
    parsed = parse_path(req.path)
    if parsed is None or parsed[4] not in PUBLISHER_METHODS.get(parsed[2], ()):
        raise SimError(404, f"Method not found: {req.path}", kind="NOT_FOUND")
    project, location, publisher, model, method = parsed
    check_bearer(req)
    if sim.models and model not in sim.models:
        raise SimError(404, f"Publisher Model `projects/{project}/locations/{location}/"
                       f"publishers/{publisher}/models/{model}` was not found or your project "
                       "does not have access to it.", kind="NOT_FOUND")
    if publisher == "anthropic":
        await vertex_anthropic.raw_predict(sim, req, model=model, method=method)
    elif method == "predict":
        await predict(sim, req, route, model=model)
    else:
        await gemini.generate(sim, req, route, model=model,
                              streaming=method == "streamGenerateContent", extra=_extra(),
                              call_ids=False)


def match(method: str, path: str) -> bool:
    return method == "POST" and path.startswith(PREFIX)
