"""Microsoft Entra ID for Azure OpenAI: the ``auth`` settings, the azure-identity credential each
builds, and the cache that keeps one bearer token ready.

``auth`` is one of (``type:``):

- ``client_secret``: a service principal's ``tenant_id``, ``client_id`` and ``client_secret``
  (azure-identity's ``ClientSecretCredential``);
- ``workload_identity``: a federated token file, as on AKS with workload identity
  (``WorkloadIdentityCredential``; ``tenant_id``, ``client_id`` and ``token_file`` default to
  ``AZURE_TENANT_ID``, ``AZURE_CLIENT_ID`` and ``AZURE_FEDERATED_TOKEN_FILE``, which the
  workload-identity webhook sets and azure-identity reads);
- ``managed_identity``: the host's managed identity (``ManagedIdentityCredential``: App
  Service's ``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER``, else IMDS); ``client_id`` picks a
  user-assigned identity;
- ``default``: azure-identity's ``DefaultAzureCredential`` chain (environment, workload identity,
  managed identity, developer tools).

The credentials are azure-identity's async ones (``azure.identity.aio``): token requests run on
the event loop without blocking it. Tokens are for ``SCOPE``. ``BearerTokens`` keeps the current
one: a call takes it without awaiting anything while it is fresh; from ``refresh_at`` (5 minutes
before expiry, or half the lifetime of a shorter-lived token) the next call starts one refresh in
the background and keeps using the still-valid token; a call that finds no valid token waits for
the refresh, which every concurrent caller shares. A failed refresh is a 502 naming the provider
and its endpoint, scrubbed of the client secret and the token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, FilePath, SecretStr

from app import errors
from app.scrub import Scrubber

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

log = logging.getLogger(__name__)

SCOPE = "https://cognitiveservices.azure.com/.default"
"""The scope of an Entra token for Azure OpenAI (Azure AI services)."""
REFRESH_MARGIN_S = 300.0
"""A token is refreshed this long before it expires (or at half its lifetime, if shorter)."""
RETRY_S = 30.0
"""After a failed background refresh, or one that returned the same token (azure-identity's own
cache, which asks Entra at most every 30 s while its token is valid), the wait before the next
try; never past the token's expiry."""
EXTRA_HINT = "pip install 'switchboard[azure]'"

Authority = Annotated[str, Field(pattern=r"^https://[^/\s]+/?$")]
"""An Entra host as an https URL: azure-identity refuses any other scheme."""


class _Auth(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClientSecretAuth(_Auth):
    """A service principal (app registration) with a client secret."""

    type: Literal["client_secret"]
    tenant_id: str
    client_id: str
    client_secret: SecretStr
    authority: Authority | None = None
    """The Entra host (default ``https://login.microsoftonline.com``, or ``AZURE_AUTHORITY_HOST``;
    sovereign clouds have their own)."""
    ca_bundle: FilePath | None = None
    """A PEM file of the certificate authorities token requests trust instead of the system's
    (a private cloud's, or a TLS-inspecting proxy's)."""


class WorkloadIdentityAuth(_Auth):
    """A federated identity: Kubernetes' projected service-account token traded for an Entra
    token. Unset fields come from azure-identity's environment variables."""

    type: Literal["workload_identity"]
    tenant_id: str | None = None
    client_id: str | None = None
    token_file: Path | None = None
    authority: Authority | None = None
    ca_bundle: FilePath | None = None


class ManagedIdentityAuth(_Auth):
    """The host's managed identity; ``client_id`` selects a user-assigned one."""

    type: Literal["managed_identity"]
    client_id: str | None = None


class DefaultAuth(_Auth):
    """azure-identity's ``DefaultAzureCredential`` chain."""

    type: Literal["default"]
    managed_identity_client_id: str | None = None
    authority: Authority | None = None


AzureAuth = Annotated[ClientSecretAuth | WorkloadIdentityAuth | ManagedIdentityAuth | DefaultAuth,
                      Field(discriminator="type")]


def require_identity() -> None:
    """Raise a ValueError saying which extra to install when azure-identity is missing."""
    try:
        import azure.identity.aio  # noqa: F401
    except ImportError:
        raise ValueError(f"auth (Microsoft Entra ID) needs azure-identity: {EXTRA_HINT}") \
            from None


def _authority(auth: ClientSecretAuth | WorkloadIdentityAuth | DefaultAuth) -> dict[str, Any]:
    return {} if auth.authority is None else {"authority": auth.authority.rstrip("/")}


def _verify(auth: ClientSecretAuth | WorkloadIdentityAuth) -> dict[str, Any]:
    return {} if auth.ca_bundle is None else {"connection_verify": str(auth.ca_bundle)}


def credential(auth: ClientSecretAuth | WorkloadIdentityAuth | ManagedIdentityAuth | DefaultAuth
               ) -> AsyncTokenCredential:
    """The azure-identity async credential ``auth`` describes (its HTTP session is its own,
    opened on the first token request and closed by the credential's ``close``)."""
    from azure.identity import aio as identity

    try:
        if isinstance(auth, ClientSecretAuth):
            return identity.ClientSecretCredential(
                auth.tenant_id, auth.client_id, auth.client_secret.get_secret_value(),
                **_authority(auth), **_verify(auth))
        if isinstance(auth, WorkloadIdentityAuth):
            return identity.WorkloadIdentityCredential(
                tenant_id=auth.tenant_id, client_id=auth.client_id,
                token_file_path=None if auth.token_file is None else str(auth.token_file),
                **_authority(auth), **_verify(auth))
        if isinstance(auth, ManagedIdentityAuth):
            return identity.ManagedIdentityCredential(client_id=auth.client_id)
        return identity.DefaultAzureCredential(
            managed_identity_client_id=auth.managed_identity_client_id, **_authority(auth))
    except ValueError as exc:  # missing settings (workload identity without its variables)
        raise ValueError(f"auth {auth.type}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Token:
    """One bearer token: the header value, its expiry and when to refresh it (epoch seconds)."""

    value: str
    header: str
    expires_at: float
    refresh_at: float


Fetch = Callable[[], Awaitable[tuple[str, float]]]
"""Gets a new token: (token, expiry in epoch seconds); raises ``TokenUnavailable``."""


class TokenUnavailable(Exception):
    """The credential could not get a token (its error, summarized on one line)."""


class BearerTokens:
    """The current token of one credential, refreshed before it expires, one refresh at a time.

    ``clock`` gives epoch seconds (tests pass their own); ``describe`` names the provider in
    errors; ``scrubber`` removes secrets from their messages.
    """

    def __init__(self, fetch: Fetch, *, describe: str, scrubber: Scrubber,
                 clock: Callable[[], float] = time.time,
                 margin_s: float = REFRESH_MARGIN_S) -> None:
        self._fetch = fetch
        self._describe = describe
        self._scrubber = scrubber
        self._clock = clock
        self._margin_s = margin_s
        self._token: Token | None = None
        self._refreshing: asyncio.Task[Token] | None = None
        self.refreshes = 0
        """Token requests made (succeeded or not)."""

    def fresh(self) -> Token | None:
        """The current token if no refresh is due; otherwise None (then await ``get``)."""
        token = self._token
        if token is not None and self._clock() < token.refresh_at:
            return token
        return None

    async def get(self) -> Token:
        """A valid token: the current one (starting a background refresh when one is due), or,
        when there is none valid, the one the shared refresh brings."""
        token = self._token
        if token is not None:
            now = self._clock()
            if now < token.refresh_at:
                return token
            if now < token.expires_at:
                self._refresh()
                return token
        # shield: a caller that goes away must not cancel the refresh the others wait for
        return await asyncio.shield(self._refresh())

    def _refresh(self) -> asyncio.Task[Token]:
        task = self._refreshing
        if task is None:
            task = self._refreshing = asyncio.get_running_loop().create_task(self._renew())
            task.add_done_callback(_retrieve)
        return task

    async def _renew(self) -> Token:
        self.refreshes += 1
        try:
            try:
                value, expires_on = await self._fetch()
            except TokenUnavailable as exc:
                self._back_off()
                raise self._failed(exc) from None
            now = self._clock()
            lifetime = max(0.0, expires_on - now)
            refresh_at = expires_on - min(self._margin_s, lifetime / 2)
            old = self._token
            if old is not None and old.value == value:
                refresh_at = min(expires_on, now + RETRY_S)
            self._token = Token(value=value, header=f"Bearer {value}", expires_at=expires_on,
                                refresh_at=refresh_at)
            return self._token
        finally:
            self._refreshing = None

    def _back_off(self) -> None:
        """After a failure, keep a still-valid token without retrying for ``RETRY_S``."""
        old = self._token
        if old is not None:
            self._token = Token(value=old.value, header=old.header, expires_at=old.expires_at,
                                refresh_at=min(old.expires_at, self._clock() + RETRY_S))

    def _failed(self, exc: TokenUnavailable) -> errors.UpstreamError:
        error = errors.UpstreamError(
            f"{self._describe}: could not get a Microsoft Entra ID token: {exc}")
        scrubbed = self._scrubber.error(error)
        assert isinstance(scrubbed, errors.UpstreamError)
        return scrubbed

    async def aclose(self) -> None:
        """Cancel a refresh in progress."""
        task = self._refreshing
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _retrieve(task: asyncio.Task[Token]) -> None:
    """Log a refresh's failure (and mark it retrieved: a background refresh has no awaiter;
    the calls that awaited one get it raised as well)."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("Entra ID token refresh failed: %s", task.exception())


def credential_fetch(cred: AsyncTokenCredential) -> Fetch:
    """``Fetch`` over an azure-identity credential, for ``SCOPE``."""

    from azure.core.exceptions import AzureError

    async def fetch() -> tuple[str, float]:
        try:
            token = await cred.get_token(SCOPE)
        except (AzureError, ValueError, OSError) as exc:
            text = str(exc).strip()
            detail = text.splitlines()[0][:400] if text else "no detail"
            raise TokenUnavailable(f"{type(exc).__name__}: {detail}") from None
        return token.token, float(token.expires_on)

    return fetch
