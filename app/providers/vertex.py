"""Google Cloud Vertex AI: Gemini models over ``generateContent`` and text embeddings over
``predict``, authenticated by OAuth2 access tokens (``vertex_auth``).

A target's ``model`` is a Google publisher model id (``gemini-2.5-flash``). Requests go to
``https://{location}-aiplatform.googleapis.com/v1/projects/{project}/locations/{location}/
publishers/google/models/{model}:{method}`` (location ``global``: host
``aiplatform.googleapis.com``; ``base_url`` replaces everything before ``/projects``, for the
simulator or a private endpoint). Chat and streams are the Gemini API's translation, unchanged
(``app.providers.gemini``: ``generateContent``, ``streamGenerateContent?alt=sse``; the module
docstring there lists what is translated, refused and dropped). The token travels in
``Authorization: Bearer`` and is scrubbed, with the key JSON, from every error; a refused
token (401 UNAUTHENTICATED, 403 PERMISSION_DENIED) is a 502 naming the provider, and after a
401 the next call fetches a new token (``tokens.TokenCache.refused``).

Embeddings: ``:predict`` with ``instances: [{"content", "task_type"}]`` and ``parameters:
{"outputDimensionality"}``, the body of Vertex's text-embeddings API (``gemini-embedding-001``,
``text-embedding-005``, ``text-multilingual-embedding-002``); Vertex's documented limits are
one instance a request for ``gemini-embedding-*`` models and 250 for the others, and 20,000
input tokens a request (``EMBED_TOKEN_BUDGET``), so a larger input is sent as several requests
(at most ``EMBED_CONCURRENCY`` at a time), vectors kept in order; the first failed request
cancels the others (``fanout.in_order``). Usage is the sum of
the predictions' ``statistics.token_count`` (estimated when one lacks it).

``VertexConfig`` (the fields), ``access_tokens`` (the token cache of a config's credentials),
``BearerUpstream`` (the upstream carrying the current token) and ``publisher_path`` are shared
with Claude on Vertex AI (``vertex_anthropic``).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal, Self
from urllib.parse import quote

import aiohttp
from pydantic import Field, SecretStr, model_validator

from app.providers.base import EmbeddingCall, ProviderBase, Result, Target
from app.providers.fanout import in_order
from app.providers.gemini import GenerateContentChat, encoded_embeddings, model_id
from app.providers.gemini_embed import (
    estimated_usage,
    predict_payloads,
    read_predict,
    texts_of,
)
from app.providers.gemini_response import error_mapper
from app.providers.http import ErrorMapper, Upstream
from app.providers.tokens import Token
from app.providers.vertex_auth import (
    AccessTokens,
    credentials_fetch,
    load_credentials,
    require_google_auth,
)
from app.scrub import Scrubber, config_secrets
from app.usage import Usage

EMBED_CONCURRENCY = 8


class VertexConfig(ProviderBase):
    """Vertex AI in one project and location; credentials: at most one of
    ``credentials_file`` and ``credentials_json`` (a service-account key), else Application
    Default Credentials. The fields every Vertex AI type takes (``vertex``,
    ``vertex_anthropic``)."""

    project: Annotated[str, Field(min_length=1)]
    location: Annotated[str, Field(min_length=1)] = "us-central1"
    base_url: str | None = None
    """Instead of ``https://{location}-aiplatform.googleapis.com/v1``."""
    credentials_file: str | None = None
    credentials_json: SecretStr | None = None

    @model_validator(mode="after")
    def _one_credential(self) -> Self:
        if self.credentials_file is not None and self.credentials_json is not None:
            raise ValueError("give at most one of credentials_file and credentials_json "
                             "(neither: Application Default Credentials)")
        require_google_auth(self.type)
        return self

    def root(self) -> str:
        """The URL that ``/projects/...`` paths go under."""
        if self.base_url is not None:
            return self.base_url.rstrip("/")
        host = "aiplatform.googleapis.com" if self.location == "global" \
            else f"{self.location}-aiplatform.googleapis.com"
        return f"https://{host}/v1"

    def secrets(self) -> tuple[str, ...]:
        """The key JSON and, inside it, the private key (both scrubbed from errors)."""
        found = config_secrets([self])
        if self.credentials_json is None:
            return found
        import json

        try:
            key = json.loads(self.credentials_json.get_secret_value()).get("private_key")
        except (ValueError, AttributeError):
            return found
        return (*found, key) if isinstance(key, str) else found


class VertexProvider(VertexConfig):
    """Gemini chat and text embeddings on Vertex AI."""

    type: Literal["vertex"]
    task_type: str | None = None
    """The embedding ``task_type`` when neither the client nor the target's params give one."""


def embed_batch(model: str) -> int:
    """Instances per ``predict`` call for ``model`` (see the module docstring)."""
    return 1 if model.startswith("gemini-embedding") else 250


EMBED_TOKEN_LIMIT = 20_000
"""Vertex's input-token limit for one text-embeddings ``predict`` request (its "Get text
embeddings" page: more is a 400)."""
EMBED_TOKEN_BUDGET = EMBED_TOKEN_LIMIT * 3 // 4
"""The estimated tokens a ``predict`` request may carry: ``usage.estimate_tokens`` counts about a
token per short word, where Google's tokenizer counts about 1.3 for English, so a quarter of
headroom keeps a batch under the limit."""


class BearerUpstream:
    """The ``Upstream`` of one Vertex AI config carrying the current access token of its
    ``AccessTokens``: awaited only when no token is fresh, rebuilt once per token (about
    hourly), the token scrubbed from its errors with the config's secrets."""

    def __init__(self, config: VertexConfig, session: aiohttp.ClientSession, *,
                 tokens: AccessTokens, error_mapper: ErrorMapper) -> None:
        self._config = config
        self._session = session
        self.tokens = tokens
        self._secrets = config.secrets()
        self._mapper = error_mapper
        self._token: Token | None = None
        self._current: Upstream | None = None

    async def get(self) -> Upstream:
        token = self.tokens.fresh() or await self.tokens.get()
        if token is not self._token or self._current is None:
            self._token = token
            self._current = Upstream(
                self._session, base_url=self._config.root(),
                headers={"Authorization": f"Bearer {token.value}", **self._config.headers},
                timeout_s=self._config.timeout_s,
                connect_timeout_s=self._config.connect_timeout_s,
                secrets=(*self._secrets, token.value),
                error_mapper=self.tokens.refusing(self._mapper, token.value))
        return self._current


def publisher_path(config: VertexConfig, publisher: str) -> str:
    """``/projects/{project}/locations/{location}/publishers/{publisher}/models/``."""
    return (f"/projects/{quote(config.project, safe='')}/locations/"
            f"{quote(config.location, safe='')}/publishers/{publisher}/models/")


class VertexAI(GenerateContentChat):
    """Vertex AI's Gemini chat, streams and text embeddings for one project and location."""

    def __init__(self, config: VertexProvider, session: aiohttp.ClientSession, *,
                 tokens: AccessTokens) -> None:
        self._config = config
        self._tokens = tokens
        self._mapper = error_mapper(describe(config))
        self._bearer = BearerUpstream(config, session, tokens=tokens, error_mapper=self._mapper)
        prefix = publisher_path(config, "google")
        super().__init__(self.upstream, model_path=lambda model: prefix + model_id(model),
                         error_mapper=self._mapper)

    async def upstream(self) -> Upstream:
        """The upstream carrying a valid token (``BearerUpstream``)."""
        return await self._bearer.get()

    def minted_credentials(self) -> tuple[str, ...]:
        """The access tokens it got lately (``base.MintsCredentials``)."""
        return self._tokens.recent()

    async def embed(self, call: EmbeddingCall, *, target: Target) -> Result:
        payloads = predict_payloads(call, target=target, default_task=self._config.task_type,
                                    batch=embed_batch(target.model),
                                    token_budget=EMBED_TOKEN_BUDGET)
        upstream = await self.upstream()
        path = self._model_path(target.model) + ":predict"

        async def one(payload: dict[str, object]) -> tuple[list[list[float]], int | None]:
            answer = await upstream.post_json(path, payload, timeout_s=target.timeout_s)
            instances = payload["instances"]
            assert isinstance(instances, list)
            return read_predict(answer, expected=len(instances))

        answers = await in_order(one, payloads, slots=asyncio.Semaphore(EMBED_CONCURRENCY),
                                 usage=_predicted)
        vectors = [v for found, _ in answers for v in found]
        counts = [tokens for _, tokens in answers]
        usage = Usage(prompt_tokens=sum(c for c in counts if c is not None)) \
            if all(c is not None for c in counts) else estimated_usage(texts_of(call))
        return encoded_embeddings(vectors, call=call, target=target, usage=usage)

    async def aclose(self) -> None:
        """Stop a token refresh in progress."""
        await self._tokens.aclose()


def _predicted(payload: dict[str, object], answer: tuple[list[list[float]], int | None]
               ) -> Usage:
    """The tokens of one answered ``predict`` (``fanout.in_order``'s ``usage``): its
    ``token_count``s, else its texts' estimate."""
    if answer[1] is not None:
        return Usage(prompt_tokens=answer[1])
    instances = payload["instances"]
    assert isinstance(instances, list)
    return estimated_usage([str(i.get("content", "")) for i in instances
                            if isinstance(i, dict)])


def describe(config: VertexConfig) -> str:
    """How errors name the provider."""
    return f"Vertex AI (project {config.project}, {config.location})"


def access_tokens(config: VertexConfig) -> AccessTokens:
    """The token cache of one config's credentials (resolved on first use, off the loop)."""
    key_json = config.credentials_json.get_secret_value() \
        if config.credentials_json is not None else None
    fetch = credentials_fetch(lambda: load_credentials(key_file=config.credentials_file,
                                                       key_json=key_json))
    return AccessTokens(fetch, describe=describe(config), scrubber=Scrubber(config.secrets()))


def build(config: VertexProvider, session: aiohttp.ClientSession) -> VertexAI:
    return VertexAI(config, session, tokens=access_tokens(config))
