"""Signed calls to an AWS runtime API over the gateway's aiohttp session, and AWS's errors.

``AwsUpstream`` is ``http.Upstream`` with two request methods of its own: the body is
serialized once, an ``Authorizer`` (SigV4 or a bearer key, ``app.providers.aws``) adds its
headers over exactly those bytes, and the URL goes to aiohttp already encoded (a model id's
``:`` or an ARN's ``/`` stays ``%3A``/``%2F``, as it was signed). Streams come back as AWS event
stream messages (``aws_eventstream``).

Errors: AWS names the error in the ``x-amzn-ErrorType`` header (``ThrottlingException:http://...``)
or the body's ``__type``/``code``, and gives ``{"message": ...}`` (or ``Message``). ``aws_error``
maps them: throttling is a 429 (``Retry-After`` kept), validation a 400, refused credentials
(``AccessDeniedException``, ``UnrecognizedClientException``, ``ExpiredTokenException``, signature
errors) a 502 naming the service and region (the gateway's credentials are not the client's to fix),
model timeouts a 504 and unavailability a 503. A SageMaker ``ModelError`` whose container answered a
4xx (``OriginalStatusCode``) is the client's 400 with the message and ``param`` of the container's
error body (``OriginalMessage``), but for a container's 408, 424 (TGI: the generation failed) and
429, which are a retryable 502 as any other ``ModelError``. Exception and error messages inside a
stream (``stream_exception``) map the same way.

An error may echo the request it refused (a proxy, a debugging endpoint): the ``Authorization``
value sent with that request is replaced whole by ``[redacted]`` in it (``_raise_for``, and the
exception messages ``events`` yields), before the scrubbing every upstream's errors get; its
signature is a credential derived per request, which no configured or minted list holds
(``app.scrub.SIGNATURE`` catches it in any other form).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any

import aiohttp
import orjson
import yarl

from app import errors
from app.providers.aws import Authorizer
from app.providers.aws_eventstream import EventStreamDecoder, Message
from app.providers.http import Upstream, read_error_body, request_body, retry_after
from app.scrub import REDACTED, Scrubber

Json = dict[str, Any]

CREDENTIAL_ERRORS = frozenset({
    "AccessDeniedException", "UnrecognizedClientException", "ExpiredTokenException",
    "ExpiredToken", "InvalidSignatureException", "SignatureDoesNotMatch", "IncompleteSignature",
    "MissingAuthenticationTokenException", "MissingAuthenticationToken",
    "InvalidClientTokenId", "UnauthorizedException", "AccessDenied",
})
_STATUS_BY_TYPE: dict[str, int] = {
    "ThrottlingException": 429, "TooManyRequestsException": 429,
    "ServiceQuotaExceededException": 429, "ValidationException": 400,
    "ResourceNotFoundException": 404, "ModelNotReadyException": 503,
    "ModelTimeoutException": 504, "ServiceUnavailableException": 503,
    "InternalServerException": 500, "InternalFailure": 500, "ModelErrorException": 502,
    "ModelError": 502, "ModelStreamErrorException": 502, "InternalStreamFailure": 502,
}


_CONTAINER_FAILURES = frozenset({408, 424, 429})
"""Container 4xx statuses that are no refusal of the input: a timeout (408), a generation that
failed (TGI's 424: CUDA out of memory, a shard lost), overload (429). Their ``ModelError`` maps
as SageMaker's own (a retryable 502), so the next target may serve the call."""


def error_type(headers: Mapping[str, str], payload: Any) -> str:
    """The AWS error type of an answer ("" when it names none)."""
    raw = headers.get("x-amzn-ErrorType") or headers.get("x-amzn-errortype") or ""
    if not raw and isinstance(payload, dict):
        found = payload.get("__type") or payload.get("code")
        raw = found if isinstance(found, str) else ""
    return raw.split(":", 1)[0].rsplit("#", 1)[-1]


def aws_error(status: int, kind: str, payload: Any, text: str, *, service: str
              ) -> errors.GatewayError:
    """The gateway error for an AWS error answer (or stream exception, ``status`` then taken
    from ``kind``). ``service`` names the provider in the message (``AWS Bedrock (us-east-1)``)."""
    if isinstance(payload, dict) and "message" not in payload and "Message" in payload:
        payload = {**payload, "message": payload["Message"]}
    message, _, _ = read_error_body(payload, text[:500] or f"HTTP {status}")
    if kind in CREDENTIAL_ERRORS or status in (401, 403):
        return errors.UpstreamAuthFailed(
            f"{service} refused the gateway's AWS credentials ({kind or status}): {message}",
            code=kind or "upstream_auth_failed")
    original = payload.get("OriginalStatusCode") if isinstance(payload, dict) else None
    if kind == "ModelError" and isinstance(original, int) and 400 <= original < 500 \
            and original not in _CONTAINER_FAILURES:
        # SageMaker's container refused the input (TGI's 422...): the client's 400, with the
        # message and param read from the container's own error body.
        return _container_refusal(payload.get("OriginalMessage"), message)
    status = _STATUS_BY_TYPE.get(kind, status)
    if status == 503:
        return errors.UpstreamUnavailable(message, status=503, code=kind or None)
    return errors.from_upstream_status(status, message, code=kind or None)


def _container_refusal(original: Any, fallback: str) -> errors.GatewayError:
    """The client's 400 for a container's 4xx carried in a ``ModelError``: its body (TGI's
    ``{"error", "error_type"}``, vLLM's OpenAI-shaped error) read as any upstream's error body,
    the raw text when it is not JSON."""
    text = original if isinstance(original, str) else ""
    try:
        body: Any = orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        body = None
    detail, _, param = read_error_body(body, text[:500] or fallback)
    return errors.UpstreamRejected(detail, status=400, code="ModelError", param=param)


def stream_exception(message: Message, *, service: str) -> errors.GatewayError:
    """The gateway error for an ``exception`` or ``error`` message inside a stream (an error
    message's text is its ``:error-message`` header)."""
    kind = message.event_type
    kind = kind[:1].upper() + kind[1:]  # Converse names them ``throttlingException``
    payload: Any
    if message.message_type == "error":
        text = message.headers.get(":error-message")
        payload = {"message": text if isinstance(text, str) and text else kind or "error"}
    else:
        try:
            payload = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            payload = None
    return aws_error(_STATUS_BY_TYPE.get(kind, 500), kind, payload,
                     message.payload.decode("utf-8", "replace"), service=service)


def _sent_authorization(signed: Mapping[str, str]) -> tuple[str, ...]:
    """The ``Authorization`` value of ``signed`` (a request's headers), when there is one."""
    authorization = signed.get("Authorization")
    return (authorization,) if authorization else ()


def _unsigned_message(message: Message, signed: Mapping[str, str]) -> Message:
    """An exception or error message with the request's ``Authorization`` value replaced by
    ``[redacted]`` wherever it is echoed whole: its payload and its string headers (the
    exception type and ``:error-message`` become the error's code and message)."""
    authorization = signed.get("Authorization")
    if not authorization:
        return message
    headers = {name: value.replace(authorization, REDACTED) if isinstance(value, str) else value
               for name, value in message.headers.items()}
    return Message(headers, message.payload.replace(authorization.encode(), REDACTED.encode()))


class AwsUpstream(Upstream):
    """An AWS runtime endpoint; see the module docstring."""

    def __init__(self, session: aiohttp.ClientSession, *, base_url: str, authorizer: Authorizer,
                 service: str, timeout_s: float, connect_timeout_s: float,
                 secrets: tuple[str, ...] = (), headers: Mapping[str, str] | None = None
                 ) -> None:
        super().__init__(session, base_url=base_url, headers=headers or {},
                         timeout_s=timeout_s, connect_timeout_s=connect_timeout_s,
                         secrets=secrets, minted=(authorizer.minted_credentials,))
        self.authorizer = authorizer
        self.service = service

    def minted_credentials(self) -> tuple[str, ...]:
        """The credentials the authorizer obtained at run time (``Authorizer``)."""
        return self.authorizer.minted_credentials()

    async def _raise_for(self, response: aiohttp.ClientResponse,
                         signed: Mapping[str, str] | None = None) -> None:
        """Raise the gateway error for an AWS error answer to a request sent with the headers
        ``signed``."""
        raw = await response.read()
        text = raw.decode("utf-8", "replace")
        try:
            payload: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            payload = None
        error = aws_error(response.status, error_type(response.headers, payload), payload, text,
                          service=self.service)
        if isinstance(error, errors.UpstreamError):
            error.retry_after_s = retry_after(response.headers.get("Retry-After"))
        # The request's own Authorization first, whole: the general scrub would take only the
        # access key id out of it (a configured or minted value), leaving the signature.
        raise self._scrub(Scrubber(_sent_authorization(signed or {})).error(error))

    async def _signed(self, path: str, body: bytes, accept: str,
                      extra: Mapping[str, str] | None) -> tuple[yarl.URL, dict[str, str]]:
        url = self.base_url + path
        headers = await self.authorizer.headers(
            "POST", url, body, {**self._headers, "Accept": accept, **(extra or {})})
        return yarl.URL(url, encoded=True), headers

    async def invoke(self, path: str, payload: Json, *, timeout_s: float | None = None,
                     headers: Mapping[str, str] | None = None) -> Any:
        """POST ``payload`` signed (``headers``: added to the upstream's); the parsed JSON of a
        2xx answer, else a gateway error."""
        body, _ = await self.invoke_answer(path, payload, timeout_s=timeout_s, headers=headers)
        return body

    async def invoke_answer(self, path: str, payload: Json, *, timeout_s: float | None = None,
                            headers: Mapping[str, str] | None = None
                            ) -> tuple[Any, Mapping[str, str]]:
        """``invoke``, with the answer's headers (Bedrock's token counts travel there)."""
        body = orjson.dumps(payload)
        url, signed = await self._signed(path, body, "application/json", headers)
        try:
            async with self._session.post(url, data=request_body(body), headers=signed,
                                          timeout=self._timeouts_for(timeout_s)[0],
                                          allow_redirects=False) as response:
                if response.status >= 300:
                    if response.status < 400:
                        raise self._redirected(response)
                    await self._raise_for(response, signed)
                raw = await response.read()
                answer_headers = response.headers
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._scrub(self._translate(exc)) from None
        try:
            return orjson.loads(raw), answer_headers
        except orjson.JSONDecodeError:
            raise errors.BadUpstreamResponse(f"{self.service} sent invalid JSON") from None

    async def events(self, path: str, payload: Json, *, timeout_s: float | None = None,
                     headers: Mapping[str, str] | None = None
                     ) -> AsyncGenerator[Message, None]:
        """POST ``payload`` signed and yield the event stream's messages as they arrive
        (exception and error messages included: the caller maps them with ``stream_exception``).

        Errors before the first message raise from the first ``__anext__``; a stream cut inside
        a message raises ``BadUpstreamResponse``. Closing the generator closes the connection.
        """
        body = orjson.dumps(payload)
        url, signed = await self._signed(path, body, "application/vnd.amazon.eventstream",
                                         headers)
        decoder = EventStreamDecoder()
        try:
            async with self._session.post(url, data=request_body(body), headers=signed,
                                          timeout=self._timeouts_for(timeout_s)[1],
                                          allow_redirects=False) as response:
                if response.status >= 300:
                    if response.status < 400:
                        raise self._redirected(response)
                    await self._raise_for(response, signed)
                async for chunk in response.content.iter_any():
                    for message in decoder.feed(chunk):
                        yield _unsigned_message(message, signed) if message.is_error \
                            else message
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._translate(exc) from None
        if decoder.pending:
            raise errors.BadUpstreamResponse(f"{self.service} cut its event stream short")
