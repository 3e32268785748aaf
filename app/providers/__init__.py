"""Provider types, by the ``type:`` a config gives them.

A new provider is one module plus one line here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp

from app.providers import anthropic, azure, local, mock, openai, vllm
from app.providers.base import Provider

Builder = Callable[[Any, aiohttp.ClientSession], Provider]

PROVIDER_TYPES: dict[str, Builder] = {
    "openai": openai.build,
    "anthropic": anthropic.build,
    "mock": mock.build,
    "vllm": vllm.build,
    "azure_openai": azure.build,
    "local": local.build,
}
