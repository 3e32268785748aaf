"""Shared fixtures: the upstream simulator on loopback, an outbound aiohttp session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from app.providers.http import new_session
from app.simulator import SimOptions, create_app
from tests.servers import serve


@pytest.fixture(scope="session")
def simulator() -> Iterator[str]:
    """A simulator speaking current vLLM/OpenAI/Anthropic dialects, with no added latency."""
    with serve(create_app(SimOptions())) as url:
        yield url


@pytest.fixture(scope="session")
def old_vllm_simulator() -> Iterator[str]:
    """A simulator playing vLLM 0.10.0: flat error bodies, ``guided_*`` structured output."""
    with serve(create_app(SimOptions(vllm_version="0.10.0"))) as url:
        yield url


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """The gateway's own outbound session, as providers use it."""
    async with new_session() as s:
        yield s
