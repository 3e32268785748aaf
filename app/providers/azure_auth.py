"""Microsoft Entra ID for Azure OpenAI: the ``auth`` settings, the azure-identity credential each
builds, and the cache that keeps one bearer token ready.

``auth`` is one of (``type:``):

- ``client_secret``: a service principal's ``tenant_id``, ``client_id`` and ``client_secret``
  (azure-identity's ``ClientSecretCredential``);
- ``workload_identity``: a federated token file, as on AKS with workload identity
  (``WorkloadIdentityCredential``; ``tenant_id``, ``client_id`` and ``token_file`` default to
  ``AZURE_TENANT_ID``, ``AZURE_CLIENT_ID`` and ``AZURE_FEDERATED_TOKEN_FILE``, which the
  workload-identity webhook sets and azure-identity reads; one that is neither given nor in
  the environment the config is loaded with is a config error);
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

What azure-identity would refuse when the credential is built is refused when the config loads
where it can be seen there (a tenant id it cannot take, workload identity's missing settings);
anything else it refuses then (settings it reads from the environment itself, such as
``AZURE_TOKEN_CREDENTIALS``) is a ``ConfigError`` from ``credential``, so that a reload, ``serve``
and ``check-config`` report it as they report an invalid file.
"""

from __future__ import annotations

import string
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from app.providers.base import refuse_empty
from app.providers.tokens import (
    REFRESH_MARGIN_S,
    Fetch,
    TokenCache,
    TokenUnavailable,
    summary,
)
from app.scrub import Scrubber

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

SCOPE = "https://cognitiveservices.azure.com/.default"
"""The scope of an Entra token for Azure OpenAI (Azure AI services)."""
RETRY_S = 30.0
"""After a failed background refresh, or one that returned the same token (azure-identity's own
cache, which asks Entra at most every 30 s while its token is valid), the wait before the next
try; never past the token's expiry."""
EXTRA_HINT = "pip install 'switchboard[azure]'"

Authority = Annotated[str, Field(pattern=r"^https://[^/\s]+/?$")]
"""An Entra host as an https URL: azure-identity refuses any other scheme."""
TENANT_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-.")
"""What azure-identity takes in a tenant id (a GUID, or a domain such as contoso.onmicrosoft.com);
it refuses any other character when the credential is built."""
WORKLOAD_VARIABLES = {"tenant_id": "AZURE_TENANT_ID", "client_id": "AZURE_CLIENT_ID",
                      "token_file": "AZURE_FEDERATED_TOKEN_FILE"}
"""The environment variables azure-identity reads for workload identity's unset fields."""


def _tenant(value: str) -> str:
    if value and not set(value) <= TENANT_CHARACTERS:  # empty: refuse_empty says so
        raise ValueError("not a Microsoft Entra tenant id (a GUID or a domain: letters, digits, "
                         "'-' and '.')")
    return value


TenantId = Annotated[str, AfterValidator(_tenant)]


class _Auth(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    _not_empty = field_validator("*")(refuse_empty)


class ClientSecretAuth(_Auth):
    """A service principal (app registration) with a client secret."""

    type: Literal["client_secret"]
    tenant_id: TenantId
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
    tenant_id: TenantId | None = None
    client_id: str | None = None
    token_file: Path | None = None
    authority: Authority | None = None
    ca_bundle: FilePath | None = None

    @model_validator(mode="after")
    def _settings_or_environment(self, info: ValidationInfo) -> WorkloadIdentityAuth:
        """Each unset field's variable must be in the environment the config is loaded with
        (``app.config.parse_config`` passes it as ``env`` in the context; without one, the
        credential's build says it)."""
        env = info.context.get("env") if isinstance(info.context, dict) else None
        if env is None:
            return self
        missing = [field for field, variable in WORKLOAD_VARIABLES.items()
                   if getattr(self, field) is None and not env.get(variable)]
        if missing:
            raise ValueError(
                f"workload_identity: {', '.join(missing)} not given, and "
                f"{', '.join(WORKLOAD_VARIABLES[field] for field in missing)} not set in the "
                "environment (AKS's workload identity webhook sets them)")
        return self


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
    opened on the first token request and closed by the credential's ``close``). Settings it
    refuses (some it reads from the environment) are a ``ConfigError`` saying why."""
    from azure.identity import aio as identity

    # app.config imports the provider modules: its error type is imported when a provider is
    # built, once the config has loaded
    from app.config import ConfigError

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
    except ValueError as exc:  # settings it refuses (the environment's among them)
        raise ConfigError(f"auth {auth.type}: {exc}") from None


class BearerTokens(TokenCache):
    """The Entra ID token of one credential (``app.providers.tokens.TokenCache``)."""

    def __init__(self, fetch: Fetch, *, describe: str, scrubber: Scrubber,
                 clock: Callable[[], float] = time.time,
                 margin_s: float = REFRESH_MARGIN_S) -> None:
        super().__init__(fetch, describe=describe, what="a Microsoft Entra ID token",
                         scrubber=scrubber, clock=clock, margin_s=margin_s, retry_s=RETRY_S)


def credential_fetch(cred: AsyncTokenCredential) -> Fetch:
    """``Fetch`` over an azure-identity credential, for ``SCOPE``."""

    from azure.core.exceptions import AzureError

    async def fetch() -> tuple[str, float]:
        try:
            token = await cred.get_token(SCOPE)
        except (AzureError, ValueError, OSError) as exc:
            raise TokenUnavailable(summary(exc)) from None
        return token.token, float(token.expires_on)

    return fetch
