"""Azure OpenAI: the OpenAI wire format, addressed by deployment.

A target's ``model`` is the deployment name. Requests go to
``{endpoint}/openai/deployments/{deployment}/{chat/completions|completions|embeddings}`` with the
``api-version`` query parameter, authenticated by the ``api-key`` header (never
``Authorization``); the config's ``headers`` are added to every request. Bodies and errors are
OpenAI-shaped, so everything else is the OpenAI-compatible provider's, except that streams ask for
usage only on api-versions that accept ``stream_options`` (older ones answer it with a 400; the
gateway then estimates usage).
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import quote

import aiohttp
from pydantic import Field, SecretStr

from app.providers.base import Json, ProviderBase, Target
from app.providers.http import Upstream
from app.providers.openai import OpenAICompatible


class AzureOpenAIProvider(ProviderBase):
    """Azure OpenAI: the target ``model`` is the deployment name."""

    type: Literal["azure_openai"]
    api_key: SecretStr
    endpoint: Annotated[str, Field(pattern=r"^https?://")]
    api_version: str = "2024-10-21"

STREAM_OPTIONS_SINCE = "2024-09-01"
"""The first api-version (2024-09-01-preview; GA in 2024-10-21) that accepts ``stream_options``."""


def accepts_stream_options(api_version: str) -> bool:
    """Whether an api-version (``YYYY-MM-DD[-preview]``; anything else counts as new) takes
    ``stream_options``."""
    date = api_version[:10]
    is_date = len(date) == 10 and date[4] == date[7] == "-" and date.replace("-", "").isdigit()
    return not is_date or date >= STREAM_OPTIONS_SINCE


class AzureOpenAI(OpenAICompatible):
    """One Azure OpenAI resource. Holds one ``Upstream`` per deployment, made on first use.

    The cache is bounded by the deployments the config's targets name, since only those
    reach the provider.
    """

    def __init__(self, config: AzureOpenAIProvider, session: aiohttp.ClientSession) -> None:
        self._config = config
        self._session = session
        self._key = config.api_key.get_secret_value()
        self._endpoint = config.endpoint.rstrip("/")
        self._deployments: dict[str, Upstream] = {}
        # Every call goes through upstream_for; the base class's own upstream is the resource root.
        super().__init__(self._new_upstream(f"{self._endpoint}/openai"))

    def _new_upstream(self, base_url: str) -> Upstream:
        return Upstream.from_config(self._session, self._config, base_url=base_url,
                                    headers={"api-key": self._key, **self._config.headers},
                                    params={"api-version": self._config.api_version})

    def prepare(self, payload: Json, *, target: Target, stream: bool) -> Json:
        """The OpenAI preparation, minus ``stream_options`` where the api-version refuses it."""
        payload = super().prepare(payload, target=target, stream=stream)
        if not accepts_stream_options(self._config.api_version):
            payload.pop("stream_options", None)
        return payload

    def upstream_for(self, target: Target) -> Upstream:
        """The deployment named by ``target.model`` (URL-quoted, so it stays one path segment)."""
        upstream = self._deployments.get(target.model)
        if upstream is None:
            deployment = quote(target.model, safe="")
            upstream = self._new_upstream(f"{self._endpoint}/openai/deployments/{deployment}")
            self._deployments[target.model] = upstream
        return upstream


def build(config: AzureOpenAIProvider, session: aiohttp.ClientSession) -> AzureOpenAI:
    return AzureOpenAI(config, session)
