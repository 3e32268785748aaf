"""Fixtures for the simulator's own tests: HTTP and SDK clients, simulators with other options.

Every client shares one transport: building an httpx client (its TLS context) costs more than
most of these tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import httpx2
import openai
import pytest

from app.simulator import SimOptions, create_app
from tests.servers import serve


@pytest.fixture(scope="session")
def transport() -> Iterator[httpx.HTTPTransport]:
    """One connection pool for every client of these tests."""
    with httpx.HTTPTransport() as shared:
        yield shared


@pytest.fixture(scope="session")
def sdk_transport() -> Iterator[httpx2.HTTPTransport]:
    """The connection pool of the SDK clients (the SDKs are built on the ``httpx2`` fork)."""
    with httpx2.HTTPTransport() as shared:
        yield shared


@pytest.fixture
def web(transport: httpx.HTTPTransport) -> httpx.Client:
    """A plain HTTP client (absolute URLs)."""
    return httpx.Client(transport=transport, timeout=10)


@pytest.fixture
def http(simulator: str, transport: httpx.HTTPTransport) -> httpx.Client:
    """A plain HTTP client on the shared simulator."""
    return httpx.Client(transport=transport, base_url=simulator, timeout=10)


@pytest.fixture
def oai(simulator: str, sdk_transport: httpx2.HTTPTransport) -> openai.OpenAI:
    """The official OpenAI SDK pointed at the shared simulator (no retries)."""
    return openai.OpenAI(base_url=f"{simulator}/v1", api_key="x", max_retries=0,
                         http_client=httpx2.Client(transport=sdk_transport))


@pytest.fixture
def claude(simulator: str, sdk_transport: httpx2.HTTPTransport) -> anthropic.Anthropic:
    """The official Anthropic SDK pointed at the shared simulator (no retries)."""
    return anthropic.Anthropic(base_url=simulator, api_key="x", max_retries=0,
                               http_client=httpx2.Client(transport=sdk_transport))


@pytest.fixture
def fresh() -> Iterator[str]:
    """A simulator of its own (clean stats and log), with no added latency."""
    with serve(create_app(SimOptions())) as url:
        yield url


@pytest.fixture(scope="module")
def strict_simulator() -> Iterator[str]:
    """A simulator serving only ``known-model`` with a 256-token context."""
    with serve(create_app(SimOptions(models=("known-model",), max_model_len=256))) as url:
        yield url


@pytest.fixture(scope="module")
def ancient_vllm_simulator() -> Iterator[str]:
    """A simulator playing vLLM 0.9.2 (``gpu_``-prefixed cache metrics)."""
    with serve(create_app(SimOptions(vllm_version="0.9.2"))) as url:
        yield url
