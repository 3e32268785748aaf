"""Microsoft Entra ID, as Azure OpenAI clients meet it: the token endpoints that issue bearer
tokens, and the check the Azure OpenAI routes make on them.

- ``POST /{tenant}/oauth2/v2.0/token`` (Entra's v2 token endpoint, what azure-identity's
  ``ClientSecretCredential`` and ``WorkloadIdentityCredential`` post to at their ``authority``):
  a form with ``grant_type=client_credentials``, ``client_id``, ``scope`` and either
  ``client_secret`` or ``client_assertion_type`` (JWT bearer) + ``client_assertion``. Answers
  ``{"token_type": "Bearer", "expires_in", "ext_expires_in", "access_token"}``; refusals are
  Entra's ``{"error", "error_description" ("AADSTS...: ..."), "error_codes", "timestamp",
  "trace_id", "correlation_id", "error_uri"}``: an unknown tenant 400 (AADSTS90002), an unknown
  client 400 (AADSTS700016), a wrong secret 401 (AADSTS7000215), a wrong assertion 401
  (AADSTS700213), a scope other than a resource's ``/.default`` 400 (AADSTS1002012).
- ``GET /msi/token`` (App Service's managed-identity endpoint, what azure-identity reads from
  ``IDENTITY_ENDPOINT`` and authenticates with ``IDENTITY_HEADER``): ``api-version=2019-08-01``,
  ``resource``, optional ``client_id``; answers ``{"access_token", "expires_on" (epoch seconds, a
  string), "resource", "token_type", "client_id"}``. App Service publishes no error body; a
  missing or wrong ``X-IDENTITY-HEADER`` is a 401 here with Entra's error fields.

azure-identity's async credentials post straight to the token endpoint (no OpenID discovery, no
instance discovery: those are MSAL's, which only its sync credentials use), but they refuse an
authority that is not https: point ``authority`` at a simulator served over TLS
(``azure_tls``).

Tokens are JWT-shaped (header.claims.signature, base64url) with Entra's claims (``aud``,
``iss``, ``iat``, ``nbf``, ``exp``, ``appid``, ``tid``, ``oid``), signed with HMAC-SHA256 under
the simulator's own key rather than Entra's RS256 keys, so any simulator process verifies any
other's tokens without shared state. Their lifetime is ``SimOptions.entra_token_lifetime_s``.
The Azure OpenAI routes accept ``Authorization: Bearer`` with such a token for the
``https://cognitiveservices.azure.com`` audience; a missing, malformed, foreign or expired token
is Azure's 401 ``{"statusCode": 401, "message": "Unauthorized. Access token is missing, ..."}``.
The test credentials below are the simulator's own, never real ones.
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

from app.simulator.asgi import Request, send_json
from app.simulator.core import Route, Sim

TENANT_ID = "sim-tenant-0001"
CLIENT_ID = "sim-client-0001"
CLIENT_SECRET = "sim-client-secret-0123456789"
FEDERATED_TOKEN = "sim-federated-token-0123456789"
"""What the workload identity's token file holds (Kubernetes' service-account JWT, really)."""
IDENTITY_HEADER = "sim-identity-header-0123456789"
"""App Service's ``IDENTITY_HEADER`` for ``/msi/token``."""
MANAGED_CLIENT_ID = "sim-managed-identity-0001"
"""The principal a managed-identity token names when no ``client_id`` is asked for."""
SIGNING_KEY = b"switchboard-simulator-entra-signing-key"
AUDIENCE = "https://cognitiveservices.azure.com"
TOKEN_SUFFIX = "/oauth2/v2.0/token"
MSI_PATH = "/msi/token"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
UNAUTHORIZED = ("Unauthorized. Access token is missing, invalid, audience is incorrect "
                f"({AUDIENCE}), or have expired.")
_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue(*, tenant: str, client_id: str, lifetime_s: int, audience: str = AUDIENCE,
          now: float | None = None) -> tuple[str, int]:
    """A signed token for ``client_id`` and its expiry (epoch seconds)."""
    issued = int(time.time() if now is None else now)
    expires = issued + lifetime_s
    claims = {"aud": audience, "iss": f"https://sts.windows.net/{tenant}/", "iat": issued,
              "nbf": issued, "exp": expires, "appid": client_id, "tid": tenant,
              "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, client_id)),
              "uti": uuid.uuid4().hex}
    signed = _HEADER + b"." + _b64(orjson.dumps(claims))
    signature = hmac.new(SIGNING_KEY, signed, hashlib.sha256).digest()
    return (signed + b"." + _b64(signature)).decode(), expires


@functools.lru_cache(maxsize=256)
def token_expiry(token: str) -> int | None:
    """The expiry of a well-signed token for Azure OpenAI's audience (None: not one). Pure, so
    memoized: a token is checked once, not per request."""
    signed, _, signature = token.rpartition(".")
    if not signed or signed.count(".") != 1:
        return None
    expected = _b64(hmac.new(SIGNING_KEY, signed.encode(), hashlib.sha256).digest()).decode()
    if not hmac.compare_digest(expected, signature):
        return None
    try:
        claims = orjson.loads(_unb64(signed.partition(".")[2]))
    except (ValueError, orjson.JSONDecodeError):
        return None
    if not isinstance(claims, dict) or claims.get("aud") not in (AUDIENCE, AUDIENCE + "/"):
        return None
    expires = claims.get("exp")
    return expires if isinstance(expires, int) else None


def bearer_accepted(authorization: str) -> bool:
    """Whether an ``Authorization`` header carries a valid, unexpired token."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    expires = token_expiry(token.strip())
    return expires is not None and time.time() < expires


async def refuse_bearer(req: Request) -> None:
    """Azure OpenAI's 401 for a bad bearer token."""
    await send_json(req.send, 401, orjson.dumps({"statusCode": 401, "message": UNAUTHORIZED}))


async def _entra_error(req: Request, status: int, error: str, code: int, text: str) -> None:
    now = datetime.now(UTC)
    trace, correlation = uuid.uuid4(), uuid.uuid4()
    stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
    description = (f"AADSTS{code}: {text}\r\nTrace ID: {trace}\r\nCorrelation ID: "
                   f"{correlation}\r\nTimestamp: {stamp}")
    body = {"error": error, "error_description": description, "error_codes": [code],
            "timestamp": stamp, "trace_id": str(trace), "correlation_id": str(correlation),
            "error_uri": f"https://login.microsoftonline.com/error?code={code}"}
    await send_json(req.send, status, orjson.dumps(body))


def _form(req: Request) -> dict[str, str]:
    return dict(parse_qsl(req.body.decode("utf-8", "replace"), keep_blank_values=True))


async def token(sim: Sim, req: Request, route: Route) -> None:
    """Entra's v2 token endpoint, client-credentials grant (secret or federated assertion)."""
    tenant = req.path[1:-len(TOKEN_SUFFIX)]
    form = _form(req)
    if tenant not in (TENANT_ID, "organizations"):
        await _entra_error(req, 400, "invalid_request", 90002,
                           f"Tenant '{tenant}' not found. Check to make sure you have the correct "
                           "tenant ID and are signing into the correct cloud.")
        return
    if form.get("grant_type") != "client_credentials":
        await _entra_error(req, 400, "unsupported_grant_type", 70003,
                           "The app requested an unsupported grant type "
                           f"'{form.get('grant_type', '')}'.")
        return
    client_id = form.get("client_id", "")
    if client_id != CLIENT_ID:
        await _entra_error(req, 400, "unauthorized_client", 700016,
                           f"Application with identifier '{client_id}' was not found in the "
                           f"directory '{tenant}'.")
        return
    refusal = _client_refusal(form)
    if refusal is not None:
        await _entra_error(req, 401, "invalid_client", *refusal)
        return
    scope = form.get("scope", "")
    if not scope.endswith("/.default") or " " in scope.strip():
        await _entra_error(req, 400, "invalid_scope", 1002012,
                           f"The provided value for scope {scope} is not valid. Client "
                           "credential flows must have a scope value with /.default suffixed "
                           "to the resource identifier (application ID URI).")
        return
    lifetime = sim.options.entra_token_lifetime_s
    access, _ = issue(tenant=TENANT_ID, client_id=client_id, lifetime_s=lifetime,
                      audience=scope[:-len("/.default")])
    await send_json(req.send, 200, orjson.dumps(
        {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
         "access_token": access}))


def _client_refusal(form: dict[str, str]) -> tuple[int, str] | None:
    """(AADSTS code, text) when the client's secret or assertion is wrong; None when right."""
    if "client_secret" in form:
        if hmac.compare_digest(form["client_secret"], CLIENT_SECRET):
            return None
        return 7000215, ("Invalid client secret provided. Ensure the secret being sent in the "
                         "request is the client secret value, not the client secret ID, for a "
                         f"secret added to app '{CLIENT_ID}'.")
    if form.get("client_assertion_type") == JWT_BEARER:
        if hmac.compare_digest(form.get("client_assertion", ""), FEDERATED_TOKEN):
            return None
        return 700213, ("No matching federated identity record found for presented assertion "
                        "subject.")
    return 7000218, ("The request body must contain the following parameter: "
                     "'client_assertion' or 'client_secret'.")


async def managed_identity(sim: Sim, req: Request, route: Route) -> None:
    """App Service's managed-identity token endpoint."""
    if not hmac.compare_digest(req.headers.get("x-identity-header", ""), IDENTITY_HEADER):
        await _entra_error(req, 401, "invalid_client", 7000215,
                           "The X-IDENTITY-HEADER is missing or does not match IDENTITY_HEADER.")
        return
    query: dict[str, Any] = dict(parse_qsl(req.query))
    resource = query.get("resource", "")
    if query.get("api-version") != "2019-08-01" or not resource:
        await _entra_error(req, 400, "invalid_request", 90014,
                           "The request needs api-version=2019-08-01 and a resource.")
        return
    client_id = query.get("client_id") or MANAGED_CLIENT_ID
    access, expires = issue(tenant=TENANT_ID, client_id=client_id,
                            lifetime_s=sim.options.entra_token_lifetime_s,
                            audience=resource.rstrip("/"))
    await send_json(req.send, 200, orjson.dumps(
        {"access_token": access, "expires_on": str(expires), "resource": resource,
         "token_type": "Bearer", "client_id": client_id}))
