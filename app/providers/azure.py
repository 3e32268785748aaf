"""Azure OpenAI: the OpenAI wire format, addressed by deployment.

A target's ``model`` is the deployment name. Requests go to
``{endpoint}/openai/deployments/{deployment}/{chat/completions|completions|embeddings}`` with the
``api-version`` query parameter, authenticated either by the ``api-key`` header (``api_key``) or
by a Microsoft Entra ID token in ``Authorization: Bearer`` (``auth``; the credentials, the token
cache and its refresh are ``azure_auth``'s), never both; the config's ``headers`` are added to
every request. Bodies and errors are OpenAI-shaped, so everything else is the OpenAI-compatible
provider's, except that streams ask for usage only on api-versions that accept
``stream_options`` (older ones answer it with a 400; the gateway then estimates usage), that a
chat call's default token limit goes in ``max_completion_tokens`` on those api-versions (in
``max_tokens`` on older ones), that a stream's opening chunk holding only the prompt's content
filter verdict is folded into the next chunk (``folded``), and that the asynchronous content
filter's annotation chunks get the stream's envelope and an empty ``delta`` (``annotated``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self
from urllib.parse import quote, urlsplit

import aiohttp
from pydantic import Field, SecretStr, model_validator

from app.providers.azure_auth import (
    AzureAuth,
    BearerTokens,
    credential,
    credential_fetch,
    require_identity,
)
from app.providers.base import EmbeddingCall, Json, ProviderBase, Result, Target
from app.providers.http import Upstream, default_error
from app.providers.openai import OpenAICompatible
from app.providers.tokens import Token
from app.scrub import Scrubber, config_secrets

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential


class AzureOpenAIProvider(ProviderBase):
    """Azure OpenAI: the target ``model`` is the deployment name; exactly one of ``api_key``
    and ``auth`` (Microsoft Entra ID, ``azure_auth``)."""

    type: Literal["azure_openai"]
    api_key: SecretStr | None = None
    auth: AzureAuth | None = None
    endpoint: Annotated[str, Field(pattern=r"^https?://")]
    api_version: str = "2024-10-21"

    @model_validator(mode="after")
    def _one_credential(self) -> Self:
        if (self.api_key is None) == (self.auth is None):
            raise ValueError("give exactly one of api_key (the resource's key) or auth "
                             "(Microsoft Entra ID: client_secret, workload_identity, "
                             "managed_identity or default)")
        if self.auth is not None:
            require_identity()
        return self

    def secrets(self) -> tuple[str, ...]:
        """Every credential this entry holds, the Entra client secret included."""
        found = config_secrets([self])
        secret = getattr(self.auth, "client_secret", None)
        return (*found, secret.get_secret_value()) if isinstance(secret, SecretStr) else found

STREAM_OPTIONS_SINCE = "2024-09-01"
"""The first api-version (2024-09-01-preview; GA in 2024-10-21) that accepts ``stream_options``
and ``max_completion_tokens``."""


def accepts_stream_options(api_version: str) -> bool:
    """Whether an api-version (``YYYY-MM-DD[-preview]``; anything else counts as new) takes
    ``stream_options`` (and ``max_completion_tokens``: both came in the same one)."""
    date = api_version[:10]
    is_date = len(date) == 10 and date[4] == date[7] == "-" and date.replace("-", "").isdigit()
    return not is_date or date >= STREAM_OPTIONS_SINCE


accepts_max_completion_tokens = accepts_stream_options
"""Whether an api-version takes ``max_completion_tokens`` (older ones know only ``max_tokens``,
which Azure's reasoning deployments refuse, so the gateway's default goes in the one it takes)."""


class AzureOpenAI(OpenAICompatible):
    """One Azure OpenAI resource. Holds one ``Upstream`` per deployment, made on first use.

    The cache is bounded by the deployments the config's targets name, since only those
    reach the provider.
    """

    def __init__(self, config: AzureOpenAIProvider, session: aiohttp.ClientSession, *,
                 tokens: BearerTokens | None = None,
                 credential: AsyncTokenCredential | None = None) -> None:
        """``tokens``: the Entra token source when ``config.auth`` is set, and ``credential``
        the azure-identity credential behind it, closed with the provider (``build`` makes
        both; tests may pass their own)."""
        self._credential = credential
        self._config = config
        self._session = session
        self._endpoint = config.endpoint.rstrip("/")
        self._secrets = config.secrets()
        self._deployments: dict[str, Upstream] = {}
        self._tokens = tokens
        self._token: Token | None = None
        self._auth: dict[str, str] = {} if config.api_key is None \
            else {"api-key": config.api_key.get_secret_value()}
        # Every call goes through upstream_for; the base class's own upstream is the resource root.
        super().__init__(self._new_upstream(f"{self._endpoint}/openai"),
                         chat_limit_field="max_completion_tokens"
                         if accepts_max_completion_tokens(config.api_version) else "max_tokens")

    def _new_upstream(self, base_url: str) -> Upstream:
        token = () if self._token is None else (self._token.value,)
        # A 401 to a call sent with an Entra token drops it (``TokenCache.refused``).
        mapper = default_error if self._tokens is None or self._token is None \
            else self._tokens.refusing(default_error, self._token.value)
        return Upstream(self._session, base_url=base_url,
                        headers={**self._auth, **self._config.headers},
                        timeout_s=self._config.timeout_s,
                        connect_timeout_s=self._config.connect_timeout_s,
                        secrets=(*self._secrets, *token), error_mapper=mapper,
                        params={"api-version": self._config.api_version})

    def minted_credentials(self) -> tuple[str, ...]:
        """The Entra ID tokens it got lately; none with an ``api_key``
        (``base.MintsCredentials``)."""
        return () if self._tokens is None else self._tokens.recent()

    async def ready(self) -> None:
        """With Entra auth, a valid token in the headers (awaited only when none is fresh)."""
        if self._tokens is not None:
            token = self._tokens.fresh() or await self._tokens.get()
            if token is not self._token:
                self._use(token)

    def _use(self, token: Token) -> None:
        """Send ``token`` from now on: the deployments' upstreams are rebuilt with it (once per
        token, about hourly; a call already sent keeps the one it had)."""
        self._token = token
        self._auth = {"Authorization": token.header}
        self._deployments = {}

    async def embed(self, call: EmbeddingCall, *, target: Target) -> Result:
        await self.ready()
        return await super().embed(call, target=target)

    def prepare(self, payload: Json, *, target: Target, stream: bool) -> Json:
        """The OpenAI preparation, minus ``stream_options`` where the api-version refuses it,
        and with a client's ``max_completion_tokens`` sent as ``max_tokens`` (the smaller of
        the two when both are given) where it knows only that one: Azure answers 400
        "Unrecognized request argument supplied: max_completion_tokens" there."""
        payload = super().prepare(payload, target=target, stream=stream)
        if not accepts_stream_options(self._config.api_version):
            payload.pop("stream_options", None)
        if not accepts_max_completion_tokens(self._config.api_version) \
                and "max_completion_tokens" in payload:
            limit = payload.pop("max_completion_tokens")
            other = payload.get("max_tokens")
            both = isinstance(limit, int) and isinstance(other, int)
            payload["max_tokens"] = min(limit, other) if both else limit if other is None \
                else other
        return payload

    def _stream(self, path: str, body: Json, target: Target, *, limit_field: str | None
                ) -> AsyncGenerator[Json, None]:
        """OpenAI's stream, its prompt-filter chunk folded into the next (``folded``) and, for
        chat, its filter annotations made completion chunks (``annotated``)."""
        return folded(super()._stream(path, body, target, limit_field=limit_field),
                      chat=path == "/chat/completions")

    def upstream_for(self, target: Target) -> Upstream:
        """The deployment named by ``target.model`` (URL-quoted, so it stays one path segment)."""
        upstream = self._deployments.get(target.model)
        if upstream is None:
            deployment = quote(target.model, safe="")
            upstream = self._new_upstream(f"{self._endpoint}/openai/deployments/{deployment}")
            self._deployments[target.model] = upstream
        return upstream


    async def aclose(self) -> None:
        """Stop a token refresh in progress and close the Entra credential's own session."""
        if self._tokens is not None:
            await self._tokens.aclose()
        if self._credential is not None:
            await self._credential.close()


PROMPT_FILTER = "prompt_filter_results"


async def folded(chunks: AsyncGenerator[Json, None], *, chat: bool = False
                 ) -> AsyncGenerator[Json, None]:
    """An Azure stream as OpenAI clients take one. Azure opens a stream with a chunk holding only
    the prompt's content filter verdict (``prompt_filter_results``; ``id``, ``model`` and
    ``object`` empty, ``created`` 0, ``choices: []``): no completion chunk, so clients that read
    ``choices[0]`` fail on it, and it names no model to price the call by. Its verdict rides on
    the next chunk instead (where a non-streamed answer has it, at the top level). Held until
    then, it is also not what the gateway times as the stream's first token (``OpeningHold``
    explains why that matters). Only the first chunk is looked at for that; in a ``chat``
    stream, a later chunk with a choice lacking ``delta`` (an asynchronous filter annotation)
    is made a completion chunk (``annotated``); every other chunk passes untouched."""
    try:
        first = await anext(chunks, None)
        if first is None:
            return
        if PROMPT_FILTER in first and not first.get("choices") and not first.get("usage"):
            verdict = first[PROMPT_FILTER]
            first = await anext(chunks, None)
            if first is None:  # nothing followed: no answer to carry it (and nothing to send)
                return
            first[PROMPT_FILTER] = verdict
        yield first
        if not chat:
            async for chunk in chunks:
                yield chunk
            return
        envelope = envelope_of(first)
        async for chunk in chunks:
            choices = chunk.get("choices")
            if choices and lacks_delta(choices):
                annotated(chunk, envelope)
            elif not envelope:
                envelope = envelope_of(chunk)
            yield chunk
    finally:
        await chunks.aclose()


ENVELOPE = ("id", "object", "created", "model")
"""A completion chunk's fields that an asynchronous filter annotation leaves empty."""


def envelope_of(chunk: Json) -> Json:
    """``chunk``'s ``ENVELOPE`` fields when it is a completion chunk (has an ``id``), else {}."""
    return {key: chunk[key] for key in ENVELOPE if key in chunk} if chunk.get("id") else {}


def lacks_delta(choices: Any) -> bool:
    """Whether a chunk's ``choices`` hold one with no ``delta``."""
    if not isinstance(choices, list):
        return False
    for choice in choices:  # noqa: SIM110 - a plain loop beats any() on this per-chunk path
        if isinstance(choice, dict) and "delta" not in choice:
            return True
    return False


def annotated(chunk: Json, envelope: Json) -> None:
    """Make an asynchronous content filter annotation a completion chunk, in place. With that
    filter, Azure checks the text after it was sent and reports each verdict in a chunk of its
    own: ``id``, ``model`` and ``object`` empty, ``created`` 0, each choice carrying
    ``content_filter_results`` and ``content_filter_offsets`` (and ``finish_reason``
    ``content_filter`` when the text was filtered) but no ``delta``, which clients reading
    ``choices[0].delta`` fail on. It gets the stream's ``envelope`` (that of its first completion
    chunk) and ``delta: {}``; the filter's fields stay."""
    chunk.update(envelope)
    for choice in chunk["choices"]:
        if isinstance(choice, dict):
            choice.setdefault("delta", {})


def describe(config: AzureOpenAIProvider) -> str:
    """How errors name the provider: its type and endpoint host."""
    return f"azure_openai provider at {urlsplit(config.endpoint).netloc or config.endpoint}"


def build(config: AzureOpenAIProvider, session: aiohttp.ClientSession) -> AzureOpenAI:
    if config.auth is None:
        return AzureOpenAI(config, session)
    cred = credential(config.auth)
    tokens = BearerTokens(credential_fetch(cred), describe=describe(config),
                          scrubber=Scrubber(config.secrets()))
    return AzureOpenAI(config, session, tokens=tokens, credential=cred)
