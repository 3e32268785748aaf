"""How the AWS dialects (Bedrock and SageMaker runtimes) check who is calling, and answer errors.

SigV4 is verified as AWS does, written here from the specification (not with botocore, so that a
test of the gateway's signing against the simulator checks one implementation with another):
the canonical request (method, the path URI-encoded once more, the sorted query, the signed
headers' trimmed values, the SHA-256 of the body), the string to sign
(``AWS4-HMAC-SHA256``, ``X-Amz-Date``, the scope, the canonical request's hash) and the HMAC key
chain from the secret. The test credentials live here (never real ones):

- ``TEST_ACCESS_KEY``/``TEST_SECRET_KEY``: long-term keys;
- ``ROTATED_ACCESS_KEY``/``ROTATED_SECRET_KEY`` with ``ROTATED_SESSION_TOKEN``: temporary
  credentials, the token required as ``X-Amz-Security-Token``;
- ``EXPIRED_ACCESS_KEY`` (any secret): temporary credentials past their expiry;
- ``BEDROCK_API_KEY``: a Bedrock API key, sent as ``Authorization: Bearer`` (Bedrock only).

Refusals, each a 403 in AWS's shape: no ``Authorization`` (``MissingAuthenticationTokenException``),
an unknown key or token (``UnrecognizedClientException``), an expired one
(``ExpiredTokenException``), a signature that does not match, a scope for another service or a
date more than 15 minutes off (``InvalidSignatureException``, for both runtimes; S3-style
``SignatureDoesNotMatch`` is not played).

Errors: ``{"message": ...}`` with the type in ``x-amzn-ErrorType`` (``aws_error_headers``).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from urllib.parse import parse_qsl, quote

from app.simulator.asgi import Request, SimError

TEST_ACCESS_KEY = "AKIASIMULATORTEST001"
TEST_SECRET_KEY = "sim/secret/key/0001/do-not-use-anywhere-else"
ROTATED_ACCESS_KEY = "ASIASIMULATORROTATED"
ROTATED_SECRET_KEY = "sim/secret/key/0002/rotated-temporary"
ROTATED_SESSION_TOKEN = "sim-session-token-0002"
EXPIRED_ACCESS_KEY = "ASIASIMULATOREXPIRED"
BEDROCK_API_KEY = "ABSKc2ltdWxhdG9yLWJlZHJvY2stYXBpLWtleQ=="

_SECRETS = {TEST_ACCESS_KEY: (TEST_SECRET_KEY, None),
            ROTATED_ACCESS_KEY: (ROTATED_SECRET_KEY, ROTATED_SESSION_TOKEN)}
_SKEW = datetime.timedelta(minutes=15)
_MISMATCH = ("The request signature we calculated does not match the signature you provided. "
             "Check your AWS Secret Access Key and signing method. Consult the service "
             "documentation for details.")

ERROR_TYPES = {400: "ValidationException", 401: "UnrecognizedClientException",
               403: "AccessDeniedException", 404: "ResourceNotFoundException",
               408: "ModelTimeoutException", 424: "ModelErrorException",
               429: "ThrottlingException", 500: "InternalServerException",
               503: "ServiceUnavailableException"}
SAGEMAKER_TYPES = {**ERROR_TYPES, 400: "ValidationError", 424: "ModelError",
                   500: "InternalFailure", 503: "ServiceUnavailable"}


def _refuse(kind: str, message: str) -> SimError:
    return SimError(403, message, kind=kind)


def aws_error_headers(err: SimError, *, types: dict[int, str], namespace: str) -> SimError:
    """``err`` with its AWS type (``kind``, else by status) in ``x-amzn-ErrorType``."""
    kind = err.kind or types.get(err.status, "InternalServerException" if err.status >= 500
                                 else "ValidationException")
    err.kind = kind
    value = f"{kind}:http://internal.amazon.com/coral/{namespace}/".encode()
    err.headers = [*(err.headers or []), (b"x-amzn-errortype", value)]
    return err


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def canonical_request(req: Request, *, canonical_uri: str, signed: list[str]) -> str:
    """SigV4's canonical request for ``req`` (``canonical_uri``: the path as the client encoded
    it, encoded once more)."""
    headers = req.headers
    query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
                     for k, v in sorted(parse_qsl(req.query, keep_blank_values=True)))
    lines = "".join(f"{name}:{' '.join(headers.get(name, '').split())}\n" for name in signed)
    payload = hashlib.sha256(req.body).hexdigest()
    return "\n".join([req.method, canonical_uri, query, lines, ";".join(signed), payload])


def _fields(authorization: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in authorization[len("AWS4-HMAC-SHA256 "):].split(","):
        name, _, value = part.strip().partition("=")
        found[name] = value
    return found


def verify(req: Request, *, service: str, encoded_path: str, bearer_ok: bool = False) -> None:
    """Raise the 403 AWS would send unless ``req`` is signed with a test key for ``service``
    (``encoded_path``: the request path as the client percent-encoded it)."""
    authorization = req.headers.get("authorization", "")
    if bearer_ok and authorization.startswith("Bearer "):
        if authorization[7:].strip() != BEDROCK_API_KEY:
            raise _refuse("UnrecognizedClientException",
                          "Authentication failed: Please make sure your API Key is valid.")
        return
    if not authorization.startswith("AWS4-HMAC-SHA256 "):
        raise _refuse("MissingAuthenticationTokenException", "Missing Authentication Token")
    fields = _fields(authorization)
    scope = fields.get("Credential", "").split("/")
    signed = [name for name in fields.get("SignedHeaders", "").split(";") if name]
    if len(scope) != 5 or scope[4] != "aws4_request" or not signed or "host" not in signed \
            or not fields.get("Signature"):
        raise _refuse("IncompleteSignatureException",
                      "Authorization header requires 'Credential', 'Signature' and "
                      "'SignedHeaders' parameters (and host signed).")
    access_key, day, region, scope_service, _ = scope
    if access_key == EXPIRED_ACCESS_KEY:
        raise _refuse("ExpiredTokenException",
                      "The security token included in the request is expired")
    known = _SECRETS.get(access_key)
    if known is None or (known[1] is not None
                         and req.headers.get("x-amz-security-token") != known[1]):
        raise _refuse("UnrecognizedClientException",
                      "The security token included in the request is invalid.")
    if scope_service != service:
        raise _refuse("InvalidSignatureException",
                      f"Credential should be scoped to correct service: '{service}'. ")
    stamp = req.headers.get("x-amz-date", "")
    try:
        when = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        raise _refuse("IncompleteSignatureException", "X-Amz-Date is missing or malformed") \
            from None
    if abs(datetime.datetime.now(datetime.UTC) - when) > _SKEW or stamp[:8] != day:
        raise _refuse("InvalidSignatureException", "Signature expired: " + stamp)
    canonical = canonical_request(req, canonical_uri=quote(encoded_path, safe="/~"),
                                  signed=signed)
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, "/".join(scope[1:]),
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(("AWS4" + known[0]).encode(), day)
    for part in (region, scope_service, "aws4_request"):
        key = _hmac(key, part)
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, fields["Signature"]):
        raise _refuse("InvalidSignatureException", _MISMATCH)


def segment(value: str) -> str:
    """A path parameter as AWS's SDKs encode it (everything but ``-_.~`` escaped)."""
    return quote(value, safe="-_.~")
