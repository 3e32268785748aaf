"""Provider types, by the ``type:`` a config gives them.

Adding a provider is one module plus one line here. The module (``app/providers/cohere.py``,
say) holds:

- its config model, a subclass of ``base.ProviderBase`` with ``type: Literal["cohere"]`` and its
  own fields (the YAML under ``providers.NAME``; secrets as ``SecretStr``);
- a class implementing the capability protocols of ``base`` it can serve (``Chat``,
  ``StreamChat``, ``Complete``, ``StreamComplete``, ``Embed``) and ``aclose``; nothing else,
  no stubs for the rest;
- ``build(config, session)``, annotated to return that class.

The line is ``ProviderType(cohere.CohereProvider, cohere.build)`` in ``_TYPES`` below. The
config schema (``app.config``) takes its provider models from here, and what the class serves is
checked against the models' targets when the config loads. Shared pieces live in ``http``
(requests, SSE, error mapping, secret scrubbing) and ``app.usage``.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from app.providers import (
    ai21,
    anthropic,
    azure,
    bedrock,
    cohere,
    gemini,
    huggingface,
    local,
    mock,
    openai,
    replicate,
    sagemaker,
    vertex,
    vertex_anthropic,
    vllm,
)
from app.providers.base import Capability, Provider, ProviderBase, capabilities

Builder = Callable[[Any, aiohttp.ClientSession], Provider]


@dataclass(frozen=True, slots=True)
class ProviderType:
    """A provider type: its config model and its builder. What it can serve (``serves``) is
    read from the class ``build`` is annotated to return, so it is known before any provider is
    built (when the config loads)."""

    config: type[ProviderBase]
    build: Builder
    serves: frozenset[Capability] = field(init=False)

    def __post_init__(self) -> None:
        returned = typing.get_type_hints(self.build).get("return")
        serves = capabilities(returned) if isinstance(returned, type) else frozenset()
        if not serves:
            raise TypeError(f"{self.build.__module__}.build must be annotated to return a "
                            "provider class that implements at least one capability")
        object.__setattr__(self, "serves", serves)

    def serves_for(self, config: ProviderBase) -> frozenset[Capability]:
        """What a provider of this type, configured as ``config``, serves."""
        offers = config.offers()
        return self.serves if offers is None else self.serves & offers

    @property
    def name(self) -> str:
        """The ``type:`` value, from the config model's ``type: Literal[...]``."""
        (name,) = typing.get_args(self.config.model_fields["type"].annotation)
        return str(name)


_TYPES = (
    ProviderType(openai.OpenAIProvider, openai.build),
    ProviderType(anthropic.AnthropicProvider, anthropic.build),
    ProviderType(mock.MockProvider, mock.build),
    ProviderType(vllm.VllmProvider, vllm.build),
    ProviderType(azure.AzureOpenAIProvider, azure.build),
    ProviderType(local.LocalProvider, local.build),
    ProviderType(replicate.ReplicateProvider, replicate.build),
    ProviderType(cohere.CohereProvider, cohere.build),
    ProviderType(ai21.AI21Provider, ai21.build),
    ProviderType(huggingface.HuggingFaceProvider, huggingface.build),
    ProviderType(bedrock.BedrockProvider, bedrock.build),
    ProviderType(sagemaker.SageMakerProvider, sagemaker.build),
    ProviderType(gemini.GeminiProvider, gemini.build),
    ProviderType(vertex.VertexProvider, vertex.build),
    ProviderType(vertex_anthropic.VertexAnthropicProvider, vertex_anthropic.build),
)

PROVIDER_TYPES: dict[str, ProviderType] = {kind.name: kind for kind in _TYPES}


def serves(config: ProviderBase) -> frozenset[Capability]:
    """What the provider a validated config entry describes serves."""
    return PROVIDER_TYPES[config.type].serves_for(config)


def build_provider(config: ProviderBase, session: aiohttp.ClientSession) -> Provider:
    """The provider a validated config entry describes."""
    return PROVIDER_TYPES[config.type].build(config, session)
