"""The gateway's one exception tree.

Every failure a client can see is a ``GatewayError``. Each class carries the HTTP status and the
OpenAI error ``type`` it is reported with, so the official SDK raises its matching exception class::

    GatewayError (500, api_error)                 a bug; never raised on purpose
    ├── InvalidRequest (400, invalid_request_error)    bad input; names the offending ``param``
    │   ├── Conflict (409)                         admin: a name taken, a revoked key rotated...
    │   ├── BodyTooLarge (413, code request_too_large)
    │   └── ClientDisconnected (499)               the client left before its body was read
    ├── AuthenticationFailed (401, authentication_error)
    ├── PermissionDenied (403, permission_error)
    ├── NotFound (404, not_found_error)                unknown route or admin object
    │   └── ModelNotFound (404, invalid_request_error)  unknown model, as OpenAI says it
    ├── RateLimited (429, requests)                    a key's or team's RPM limit
    │   └── TokensRateLimited (429, tokens)            its TPM limit (or a call too large for it)
    ├── QuotaExceeded (429, insufficient_quota)        a key's or team's budget is spent
    ├── Overloaded (503, server_error)                 past the gateway's own concurrency limit
    └── UpstreamError (502, upstream_error)            anything that went wrong beyond the gateway
        ├── UpstreamRejected (4xx from upstream, status kept; e.g. 400 context too long)
        ├── UpstreamAuthFailed (502)                            retryable
        │       the gateway's own credential refused, or not to be had (a token), or its
        │       account with the provider unable to pay (402 Payment Required)
        ├── UpstreamRateLimited (429, rate_limit_error)         retryable
        ├── UpstreamUnavailable (5xx from upstream, status kept) retryable
        ├── UpstreamConnectError (502)                          retryable
        │       refused, or broken before the answer was whole (a body short of its length,
        │       a stream cut or closed before its first chunk)
        ├── UpstreamTimeout (504, timeout)                      retryable
        └── BadUpstreamResponse (502)                           retryable
                upstream answered something unusable (invalid JSON, a wrong shape, a redirect)

``retryable`` says whether the next target may be tried (only ever before the first byte has
reached the client); whether the same target is tried again is ``app.routing.retry``'s to say
(never after a refused credential or an unusable answer). Provider adapters translate their
upstream's errors into this tree at the boundary; nothing above them sees an HTTP client's
exceptions. Messages never carry credentials. ``headers`` are response headers an error raised
outside a model call goes out with (a model call's stages put theirs on the call).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from app.usage import Usage


def problem_message(problem: Mapping[str, Any]) -> str:
    """The message of one of pydantic's validation problems (``ValidationError.errors()``),
    without the "Value error, " pydantic puts before a validator's own words."""
    return str(problem.get("msg", "invalid")).removeprefix("Value error, ")


class GatewayError(Exception):
    """Base of every error the gateway reports to a client."""

    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "api_error"
    retryable: ClassVar[bool] = False
    billed: Usage | None = None
    """What the failed attempt was billed upstream before it failed: the batches of a split
    embedding request that were answered (``fanout.billed``); the gateway accounts it for the
    call (``app.gateway``)."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status_code = status if status is not None else self.status
        self.headers: list[tuple[bytes, bytes]] = []
        """Response headers to send with it, as the server writes them (``Retry-After``,
        ``x-ratelimit-*`` of a refused ``POST /v1/feedback``)."""

    def body(self) -> dict[str, Any]:
        """The OpenAI-shaped error body."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(GatewayError):
    status = 400
    error_type = "invalid_request_error"


class ClientDisconnected(InvalidRequest):
    """The client disconnected while sending its request's body: nobody reads the answer, and a
    model call is recorded ``cancelled`` (499), as a disconnect later in the call is."""

    status = 499


class Conflict(InvalidRequest):
    """A request that conflicts with the state it would change (a name taken, a team that
    still has keys, a revoked key rotated, a prompt template changed meanwhile, no config file
    to reload): the caller's to resolve, so ``invalid_request_error`` as every other 4xx."""

    status = 409


class BodyTooLarge(InvalidRequest):
    """A request body over ``limits.max_body_bytes``: code ``request_too_large`` (Anthropic's
    name for its 413) unless told (a rendered prompt template's ``prompt_too_large``)."""

    status = 413

    def __init__(self, message: str, *, param: str | None = None,
                 code: str | None = "request_too_large", status: int | None = None) -> None:
        super().__init__(message, param=param, code=code, status=status)


class AuthenticationFailed(GatewayError):
    status = 401
    error_type = "authentication_error"


class PermissionDenied(GatewayError):
    status = 403
    error_type = "permission_error"


class NotFound(GatewayError):
    status = 404
    error_type = "not_found_error"


class ModelNotFound(NotFound):
    """A model the gateway does not serve (or the caller's key may not see): OpenAI's 404 for
    it, ``type: invalid_request_error``, ``code: model_not_found``, ``param: null``."""

    error_type = "invalid_request_error"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model '{model[:200]}' does not exist or you do not have access "
                         "to it.", code="model_not_found")


class RateLimited(GatewayError):
    """A caller's rate limit is reached; retry later. Its ``type`` names the limit, as
    OpenAI's own 429s do: ``requests`` (per minute) here, ``tokens`` for a TPM limit
    (``TokensRateLimited``). The SDKs pick their exception by status, not ``type``."""

    status = 429
    error_type = "requests"


class TokensRateLimited(RateLimited):
    """A caller's tokens-per-minute limit is reached, or one call asks for more than it."""

    error_type = "tokens"


class QuotaExceeded(GatewayError):
    """A caller's budget for the period is spent; retrying does not help until it resets."""

    status = 429
    error_type = "insufficient_quota"


class Overloaded(GatewayError):
    """The gateway is serving as many requests as it may (``SWITCHBOARD_MAX_CONCURRENCY``)."""

    status = 503
    error_type = "server_error"


class UpstreamError(GatewayError):
    status = 502
    error_type = "upstream_error"
    retry_after_s: float | None = None
    """The upstream's ``Retry-After``, in seconds, when it sent one (``app.routing.retry``)."""


class UpstreamRejected(UpstreamError):
    """The upstream refused the request as invalid (its 4xx other than 429), status kept."""

    error_type = "invalid_request_error"


class UpstreamAuthFailed(UpstreamError):
    """The upstream refused the gateway's own credential for it (401, 403, a provider's "invalid
    key"), or the gateway could not get one (a token, role credentials), or the upstream refused
    to serve the gateway's account for want of payment (402: out of credit, pay-as-you-go not
    enabled): the target's fault, not the client's, so the next target may serve the call."""

    retryable = True


class UpstreamRateLimited(UpstreamError):
    status = 429
    error_type = "rate_limit_error"
    retryable = True


class UpstreamUnavailable(UpstreamError):
    status = 503
    error_type = "upstream_error"
    retryable = True


class UpstreamConnectError(UpstreamError):
    """No connection to the upstream, or one that broke before its answer was whole: a moment
    may cure it (the same target is retried, ``app.routing.retry``)."""

    status = 502
    retryable = True


class UpstreamTimeout(UpstreamError):
    status = 504
    error_type = "timeout"
    retryable = True


class BadUpstreamResponse(UpstreamError):
    """The upstream answered, whole, something the gateway cannot use (a 200 that is not
    JSON, an answer of the wrong shape, a redirect). The target's fault (its breaker counts it),
    so the next target may serve the call; the same one is not asked again (it would most
    likely answer the same, and may have billed this one)."""

    status = 502
    retryable = True


def from_upstream_status(status: int, message: str, *, code: str | None = None,
                         param: str | None = None) -> UpstreamError:
    """Map an upstream HTTP error status to the matching gateway error, keeping the status."""
    if status == 429:
        return UpstreamRateLimited(message, code=code, param=param)
    if status == 401 or status == 403:
        # The gateway's own credentials for the upstream were refused: the client can't fix
        # that, so it is reported as a bad gateway, not as the client's auth failure.
        return UpstreamAuthFailed(f"upstream refused the gateway's credentials: {message}",
                                  code=code)
    if status == 402:
        # The gateway's own account with the provider cannot pay for the call: nothing the
        # client can fix, so, as a refused credential, a bad gateway the next target may cure.
        return UpstreamAuthFailed("upstream refused the call for payment (402 Payment Required: "
                                  f"the gateway's account with it is out of credit): {message}",
                                  code=code or "upstream_payment_required")
    if status == 404:
        return UpstreamRejected(message, status=404, code=code or "model_not_found", param=param)
    if status == 408:
        return UpstreamTimeout(message, code=code)
    if 400 <= status < 500:
        return UpstreamRejected(message, status=status, code=code, param=param)
    if status == 504:
        return UpstreamTimeout(message, code=code)
    if status >= 500:
        # An upstream 500 is reported as 502 so that a 500 from the gateway always means our bug.
        return UpstreamUnavailable(message, status=502 if status == 500 else status, code=code)
    return BadUpstreamResponse(f"unexpected upstream status {status}: {message}", code=code)
