"""Azure OpenAI: the OpenAI wire format, addressed by deployment.

A target's ``model`` is the deployment name. Requests go to
``{endpoint}/openai/deployments/{deployment}/{chat/completions|completions|embeddings}`` with the
``api-version`` query parameter, authenticated by the ``api-key`` header (never
``Authorization``); the config's ``headers`` are added to every request. Bodies and errors are
OpenAI-shaped, so everything else is the OpenAI-compatible provider's.
"""

from __future__ import annotations

from urllib.parse import quote

import aiohttp

from app.config import AzureOpenAIProvider
from app.providers.base import Target
from app.providers.http import Upstream
from app.providers.openai import OpenAICompatible


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
        return Upstream(
            self._session,
            base_url=base_url,
            headers={"api-key": self._key, **self._config.headers},
            params={"api-version": self._config.api_version},
            timeout_s=self._config.timeout_s,
            connect_timeout_s=self._config.connect_timeout_s,
            secrets=(self._key,),
        )

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
