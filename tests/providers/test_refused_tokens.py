"""A bearer token the upstream refuses with a 401 (revoked before its expiry) is dropped: the
next call fetches a new one instead of sending it until its refresh time. Vertex AI and Azure
OpenAI (Entra ID) against the simulator, and the token cache under a controlled clock."""

# The private_key fixture lives in tests/providers/test_vertex.py: imported here so pytest finds
# it, and then named by a test's parameter (which ruff reads as a redefinition).
# ruff: noqa: F811

from __future__ import annotations

import time

import aiohttp
import pytest

from app import errors
from app.providers import azure_auth, vertex
from app.providers.azure import AzureOpenAI, AzureOpenAIProvider
from app.providers.azure_auth import BearerTokens
from app.providers.base import Target
from app.providers.http import default_error
from app.providers.tokens import Token
from app.providers.vertex_auth import RETRY_S, AccessTokens
from app.scrub import Scrubber
from app.simulator import azure_entra as entra
from app.simulator.vertex import issue
from tests.providers.test_gemini_translation import chat_call
from tests.providers.test_vertex import (  # noqa: F401 - a fixture, used by name
    TARGET,
    Clock,
    config,
    counting_fetch,
    last_received,
    private_key,
)


async def test_vertex_token_refused_with_401_is_replaced(
        simulator: str, session: aiohttp.ClientSession, private_key: str) -> None:
    """A current token Vertex answers 401 for fails that call (502), and the next call is
    sent with a newly fetched token and served."""
    clock = Clock()
    clock.now = time.time()
    api = vertex.build(config(simulator, private_key), session)
    api._tokens._clock = clock  # the controlled clock, for this test only
    try:
        await api.chat(chat_call(), target=TARGET)
        clock.now += RETRY_S + 1
        revoked = issue("x", lifetime_s=60, now=time.time() - 3600)  # the simulator's 401
        api._tokens._token = Token(value=revoked, expires_at=clock.now + 3000,
                                   refresh_at=clock.now + 2000)
        with pytest.raises(errors.UpstreamAuthFailed):
            await api.chat(chat_call(), target=TARGET)
        await api.chat(chat_call(), target=TARGET)
        sent = (await last_received(simulator, session))["headers"]["authorization"]
        assert sent != f"Bearer {revoked}" and api._tokens.refreshes == 2
    finally:
        await api.aclose()


async def test_refused_token_dropped_once_per_retry_interval() -> None:
    """Only the current token is dropped, and not one fetched less than retry_s ago (a
    credential whose new tokens are refused is not asked on every call); a 403 drops none."""
    clock = Clock()
    issued, fetch = counting_fetch(3600, clock)
    tokens = AccessTokens(fetch, describe="v", scrubber=Scrubber(()), clock=clock)
    first = await tokens.get()
    tokens.refused(first.value)  # just fetched: kept
    assert tokens.fresh() is first
    clock.now += RETRY_S
    tokens.refusing(default_error, first.value)(403, None, "forbidden")
    tokens.refused("an-older-token")
    assert tokens.fresh() is first
    tokens.refusing(default_error, first.value)(401, None, "revoked")
    assert tokens.fresh() is None
    assert (await tokens.get()).value == "token-2" and issued == ["token-1", "token-2"]


async def test_azure_entra_token_refused_with_401_is_replaced(
        simulator: str, session: aiohttp.ClientSession) -> None:
    """An Entra token Azure answers 401 for is dropped; the next call fetches and uses a new
    one (here the credential's second token, one the simulator issued)."""
    clock = Clock()
    clock.now = time.time()
    handed: list[str] = []

    async def fetch() -> tuple[str, float]:
        token, expires = entra.issue(tenant=entra.TENANT_ID, client_id=entra.CLIENT_ID,
                                     lifetime_s=3600)
        handed.append("revoked-token" if not handed else token)
        return handed[-1], float(expires)

    cache = BearerTokens(fetch, describe="azure", scrubber=Scrubber(()), clock=clock)
    provider = AzureOpenAIProvider.model_validate({
        "type": "azure_openai", "endpoint": simulator, "api_version": "2024-10-21",
        "auth": {"type": "client_secret", "tenant_id": entra.TENANT_ID,
                 "client_id": entra.CLIENT_ID, "client_secret": entra.CLIENT_SECRET}})
    api = AzureOpenAI(provider, session, tokens=cache)
    target = Target(provider="az", model="gpt4o-prod")
    try:
        with pytest.raises(errors.UpstreamAuthFailed):
            await api.chat(chat_call(), target=target)
        clock.now += azure_auth.RETRY_S  # the refused token is old enough to be dropped
        with pytest.raises(errors.UpstreamAuthFailed):
            await api.chat(chat_call(), target=target)
        await api.chat(chat_call(), target=target)
        sent = (await last_received(simulator, session))["headers"]["authorization"]
        assert sent == f"Bearer {handed[-1]}" and len(handed) == 2
    finally:
        await api.aclose()
