"""The Vertex AI provider: its token cache under a controlled clock, and the provider, google-auth
and google-genai against the simulator (token endpoint included)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google import genai
from google.genai import types
from google.oauth2 import service_account
from pydantic import SecretStr, ValidationError

from app import errors
from app.providers import vertex
from app.providers.base import EmbeddingCall, Json, Target
from app.providers.tokens import Token, TokenUnavailable
from app.providers.vertex import VertexProvider
from app.providers.vertex_auth import SCOPES, AccessTokens
from app.schemas import EmbeddingRequest
from app.scrub import Scrubber
from app.simulator import SimOptions, create_app
from app.simulator.vertex import issue
from tests.providers.test_gemini_translation import WEATHER, chat_call
from tests.servers import serve

TARGET = Target(provider="vertex", model="gemini-2.5-flash")


@pytest.fixture(scope="module")
def private_key() -> str:
    """A throwaway RSA key for the test service account."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def key_json(simulator: str, private_key: str) -> str:
    return orjson.dumps({
        "type": "service_account", "project_id": "sim-project",
        "private_key_id": "0123456789abcdef", "private_key": private_key,
        "client_email": "gateway@sim-project.iam.gserviceaccount.com",
        "client_id": "1234567890", "token_uri": f"{simulator}/vertex/token"}).decode()


def config(simulator: str, private_key: str, **extra: Any) -> VertexProvider:
    return VertexProvider(type="vertex", project="sim-project", location="us-central1",
                          base_url=f"{simulator}/vertex/v1",
                          credentials_json=SecretStr(key_json(simulator, private_key)), **extra)


async def last_received(simulator: str, session: aiohttp.ClientSession) -> Json:
    async with session.get(f"{simulator}/_sim/requests?limit=1") as response:
        received: list[Json] = await response.json()
    return received[-1]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


# --- the token cache -----------------------------------------------------------------------


def counting_fetch(lifetime: float, clock: Clock) -> tuple[list[str], Any]:
    issued: list[str] = []
    gate = threading.Event()
    gate.set()

    def fetch() -> tuple[str, float]:
        gate.wait(5)
        assert threading.current_thread() is not threading.main_thread()
        issued.append(f"token-{len(issued) + 1}")
        return issued[-1], clock.now + lifetime

    fetch.gate = gate  # type: ignore[attr-defined]
    return issued, fetch


async def test_token_cached_then_refreshed_before_expiry() -> None:
    """A token is fetched once, reused while fresh, refreshed in the background within the
    margin (callers keep the old one meanwhile), and waited for once expired."""
    clock = Clock()
    issued, fetch = counting_fetch(3600, clock)
    tokens = AccessTokens(fetch, describe="v", scrubber=Scrubber(()), clock=clock)
    first = await tokens.get()
    assert first.value == "token-1" and first.refresh_at == clock.now + 3600 - 300
    clock.now += 3000
    assert tokens.fresh() is first and (await tokens.get()) is first and len(issued) == 1
    clock.now += 400  # inside the 300 s margin, still valid
    assert tokens.fresh() is None
    assert (await tokens.get()).value == "token-1"  # the old one, a refresh started
    await asyncio.sleep(0)
    for _ in range(100):
        if len(issued) == 2:
            break
        await asyncio.sleep(0.01)
    assert (await tokens.get()).value == "token-2" and tokens.refreshes == 2
    clock.now += 4000  # expired: the caller waits for the next one
    assert (await tokens.get()).value == "token-3"


async def test_concurrent_callers_share_one_refresh() -> None:
    """Twenty callers with no token make one fetch between them."""
    clock = Clock()
    issued, fetch = counting_fetch(3600, clock)
    fetch.gate.clear()
    tokens = AccessTokens(fetch, describe="v", scrubber=Scrubber(()), clock=clock)
    waiting = [asyncio.create_task(tokens.get()) for _ in range(20)]
    await asyncio.sleep(0.01)
    fetch.gate.set()
    got = await asyncio.gather(*waiting)
    assert {t.value for t in got} == {"token-1"} and issued == ["token-1"]


async def test_failed_refresh_is_502_scrubbed() -> None:
    """A credential that cannot get a token is a 502 naming the provider, secret scrubbed."""
    def fetch() -> tuple[str, float]:
        raise TokenUnavailable("RefreshError: bad key sekrit-123")

    tokens = AccessTokens(fetch, describe="Vertex AI (project p, l)",
                          scrubber=Scrubber(("sekrit-123",)), clock=Clock())
    with pytest.raises(errors.UpstreamError) as caught:
        await tokens.get()
    assert caught.value.status_code == 502
    assert "Vertex AI (project p, l)" in caught.value.message
    assert "sekrit-123" not in caught.value.message


def test_config_refuses_two_credentials_and_builds_urls() -> None:
    """At most one credential; location global uses the global host."""
    with pytest.raises(ValidationError):
        VertexProvider(type="vertex", project="p", credentials_file="/k.json",
                       credentials_json=SecretStr("{}"))
    assert VertexProvider(type="vertex", project="p").root() == \
        "https://us-central1-aiplatform.googleapis.com/v1"
    assert VertexProvider(type="vertex", project="p", location="global").root() == \
        "https://aiplatform.googleapis.com/v1"


# --- against the simulator -----------------------------------------------------------------


async def test_chat_stream_tools_through_service_account(
    simulator: str, session: aiohttp.ClientSession, private_key: str
) -> None:
    """The service-account key gets a token from the simulator's token endpoint; chat, stream
    and a forced tool call go to the publisher model's path with it."""
    api = vertex.build(config(simulator, private_key), session)
    try:
        result = await api.chat(chat_call(), target=TARGET)
        sent = await last_received(simulator, session)
        assert sent["path"] == ("/vertex/v1/projects/sim-project/locations/us-central1/"
                                "publishers/google/models/gemini-2.5-flash:generateContent")
        assert sent["headers"]["authorization"].startswith("Bearer ya29.")
        assert result.body["choices"][0]["message"]["content"].startswith("Simulated reply")
        chunks = [c async for c in api.stream_chat(chat_call(), target=TARGET)]
        assert chunks[-1]["usage"]["completion_tokens"] == 16
        tools = await api.chat(chat_call(tools=[WEATHER], tool_choice="required"),
                               target=TARGET)
        assert tools.body["choices"][0]["finish_reason"] == "tool_calls"
    finally:
        await api.aclose()


async def test_embeddings_one_instance_per_call_for_gemini_embedding(
    simulator: str, session: aiohttp.ClientSession, private_key: str
) -> None:
    """gemini-embedding-001 gets one predict call per text, vectors in order, usage from the
    predictions' token counts."""
    api = vertex.build(config(simulator, private_key, task_type="RETRIEVAL_DOCUMENT"), session)
    texts = ["alpha", "beta gamma", "delta"]
    body: Json = {"model": "e", "input": texts, "dimensions": 6}
    call = EmbeddingCall(request=EmbeddingRequest.model_validate(body), body=body)
    try:
        result = await api.embed(call, target=Target(provider="v",
                                                     model="gemini-embedding-001"))
        async with session.get(f"{simulator}/_sim/requests?limit=3") as response:
            singles: list[Json] = await response.json()
        assert sorted(r["body"]["instances"][0]["content"] for r in singles) == sorted(texts)
        assert all(len(r["body"]["instances"]) == 1 for r in singles)
        small = await api.embed(call, target=Target(provider="v", model="text-embedding-005"))
    finally:
        await api.aclose()
    sent = await last_received(simulator, session)
    assert sent["body"] == {"instances": [
        {"content": t, "task_type": "RETRIEVAL_DOCUMENT"} for t in texts],
        "parameters": {"outputDimensionality": 6}}
    assert [d["embedding"] for d in result.body["data"]] == \
        [d["embedding"] for d in small.body["data"]]
    assert len(result.body["data"][2]["embedding"]) == 6
    assert result.usage is not None and not result.usage.estimated
    assert result.usage.prompt_tokens == 4


async def test_failed_predict_call_stops_the_requests_other_calls(
    simulator: str, session: aiohttp.ClientSession, private_key: str
) -> None:
    """With one instance a call, the first failed predict call cancels the request's other
    calls: none is left running when embed raises, and at most EMBED_CONCURRENCY reached
    Vertex (a plain gather went on sending all 40)."""
    refused = config(simulator, private_key, headers={"X-Return-Error": "400"}).model_copy(
        update={"project": "fanout-project"})
    api = vertex.build(refused, session)
    body: Json = {"model": "e", "input": [f"text {i}" for i in range(40)]}
    call = EmbeddingCall(request=EmbeddingRequest.model_validate(body), body=body)
    before = asyncio.all_tasks()
    try:
        with pytest.raises(errors.UpstreamError):
            await api.embed(call, target=Target(provider="v", model="gemini-embedding-001"))
        running = [t for t in asyncio.all_tasks() - before if not t.done()]
        await asyncio.gather(*running, return_exceptions=True)
    finally:
        await api.aclose()
    async with session.get(f"{simulator}/_sim/stats") as response:
        counts: dict[str, int] = (await response.json())["requests"]
    sent = sum(n for path, n in counts.items() if "/fanout-project/" in path)
    assert 1 <= sent <= vertex.EMBED_CONCURRENCY
    assert running == []


async def test_token_refresh_mid_run_and_expired_token(
    simulator: str, session: aiohttp.ClientSession, private_key: str
) -> None:
    """With the clock past the refresh point a new token is fetched and used; a token the
    upstream finds expired is a 502 naming Vertex AI, the token not in it."""
    clock = Clock()
    clock.now = time.time()
    api = vertex.build(config(simulator, private_key), session)
    api._tokens._clock = clock  # the controlled clock, for this test only
    try:
        await api.chat(chat_call(), target=TARGET)
        first = (await last_received(simulator, session))["headers"]["authorization"]
        clock.now += 3600 - 200
        await api.chat(chat_call(), target=TARGET)  # served with the old token, refresh begins
        for _ in range(200):
            if api._tokens.refreshes == 2 and api._tokens.fresh() is not None:
                break
            await asyncio.sleep(0.01)
        await api.chat(chat_call(), target=TARGET)
        second = (await last_received(simulator, session))["headers"]["authorization"]
        assert api._tokens.refreshes == 2 and second != first
    finally:
        await api.aclose()
    expired = issue("x", lifetime_s=60, now=time.time() - 3600)
    api._tokens._token = Token(value=expired, expires_at=clock.now + 3600,
                               refresh_at=clock.now + 3000)
    with pytest.raises(errors.UpstreamError) as caught:
        await api.chat(chat_call(), target=TARGET)
    assert caught.value.status_code == 502
    assert "Vertex AI (project sim-project, us-central1)" in caught.value.message
    assert "UNAUTHENTICATED" in caught.value.message and expired not in caught.value.message


async def test_429_keeps_retry_after(simulator: str, session: aiohttp.ClientSession,
                                     private_key: str) -> None:
    """RESOURCE_EXHAUSTED stays 429 with its retry-after."""
    api = vertex.build(config(simulator, private_key, headers={"X-Return-Error": "429"}),
                       session)
    with pytest.raises(errors.UpstreamRateLimited) as caught:
        await api.chat(chat_call(), target=TARGET)
    assert caught.value.retry_after_s == 1.0
    await api.aclose()


@pytest.fixture
def short_lived() -> Iterator[str]:
    with serve(create_app(SimOptions(google_token_lifetime_s=120))) as url:
        yield url


def test_google_auth_and_genai_sdk_against_the_simulator(short_lived: str,
                                                         private_key: str) -> None:
    """google-auth's own service-account flow gets a token with the configured lifetime, and
    google-genai (vertexai) generates, streams and parses the answers with its own types."""
    info = orjson.loads(key_json(short_lived, private_key))
    credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
        info, scopes=SCOPES)
    client = genai.Client(vertexai=True, project="sim-project", location="us-central1",
                          credentials=credentials,
                          http_options=types.HttpOptions(base_url=f"{short_lived}/vertex/",
                                                         api_version="v1"))
    answer = client.models.generate_content(model="gemini-2.5-flash", contents="Hello there")
    assert answer.text is not None and answer.text.startswith("Simulated reply to: Hello there")
    assert answer.create_time is not None and answer.usage_metadata is not None
    assert credentials.expiry is not None
    lifetime = credentials.expiry.timestamp() - time.time()
    assert 60 < lifetime <= 120 + 5
    pieces = [c.text for c in client.models.generate_content_stream(
        model="gemini-2.5-flash", contents="Hello there")]
    assert "".join(p or "" for p in pieces) == answer.text


def test_token_endpoint_refuses_other_grants(simulator: str) -> None:
    """A grant other than the JWT bearer is Google's unsupported_grant_type."""
    import httpx

    response = httpx.post(f"{simulator}/vertex/token",
                          data={"grant_type": "client_credentials"})
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"
    missing = httpx.post(f"{simulator}/vertex/v1/projects/p/locations/l/publishers/google/"
                         "models/m:generateContent", json={"contents": []})
    assert missing.status_code == 401
    assert missing.json()["error"]["status"] == "UNAUTHENTICATED"
