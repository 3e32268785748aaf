"""Azure OpenAI with Microsoft Entra ID against the simulator: azure-identity's own credentials
get tokens from the simulator's Entra endpoints (over TLS, as azure-identity insists), the Azure
routes verify them, and the openai SDK's Azure client accepts what they answer."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import openai
import pytest

from app import errors
from app.providers import azure, azure_auth
from app.providers.azure import AzureOpenAIProvider
from app.providers.azure_auth import SCOPE
from app.providers.base import Json, Target
from app.scrub import Scrubber
from app.simulator import SimOptions, create_app
from app.simulator import azure_entra as entra
from app.simulator.azure_tls import serve_tls
from tests.providers.calls import chat, embedding, header, received
from tests.providers.replay import Replay

TARGET = Target(provider="azure", model="gpt4o-prod")
HELLO: Json = {"model": "chat", "messages": [{"role": "user", "content": "Say hello"}]}
TOKEN_PATH = f"/{entra.TENANT_ID}/oauth2/v2.0/token"


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A simulator over TLS playing Entra's token endpoint: its URL and the CA to trust."""
    with serve_tls(create_app(SimOptions()), tmp_path_factory.mktemp("tls")) as served:
        yield served


def client_secret(authority: tuple[str, Path], secret: str = entra.CLIENT_SECRET
                  ) -> dict[str, Any]:
    url, ca = authority
    return {"type": "client_secret", "tenant_id": entra.TENANT_ID, "client_id": entra.CLIENT_ID,
            "client_secret": secret, "authority": url, "ca_bundle": str(ca)}


def make(simulator: str, session: aiohttp.ClientSession, auth: dict[str, Any],
         **fields: Any) -> azure.AzureOpenAI:
    config = AzureOpenAIProvider.model_validate(
        {"type": "azure_openai", "endpoint": simulator, "auth": auth, **fields})
    return azure.build(config, session)


def claims(authorization: str) -> Json:
    """The claims of the JWT in an ``Authorization: Bearer`` header."""
    payload = authorization.removeprefix("Bearer ").split(".")[1]
    decoded: Json = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


async def test_client_secret_token_sent_as_bearer(
    simulator: str, session: aiohttp.ClientSession, authority: tuple[str, Path]
) -> None:
    """Chat and embeddings carry the Entra token as Bearer (no api-key); one token request."""
    provider = make(simulator, session, client_secret(authority))
    try:
        async with session.post(f"{authority[0]}/_sim/reset", ssl=False):
            pass
        result = await provider.chat(chat(HELLO), target=TARGET)
        assert result.body["object"] == "chat.completion"
        [record] = await received(session, simulator)
        authorization = header(record, "authorization")
        assert authorization is not None and header(record, "api-key") is None
        token = claims(authorization)
        assert token["aud"] == entra.AUDIENCE and token["appid"] == entra.CLIENT_ID
        assert token["tid"] == entra.TENANT_ID and token["exp"] > time.time() + 3000
        vectors = await provider.embed(embedding({"model": "e", "input": "hi"}), target=TARGET)
        assert len(vectors.body["data"]) == 1
        [record] = await received(session, simulator)
        assert header(record, "authorization") == authorization
        async with session.get(f"{authority[0]}/_sim/stats", ssl=False) as answer:
            stats = await answer.json()
        assert stats["requests"] == {TOKEN_PATH: 1}
    finally:
        await provider.aclose()


async def test_stream_with_client_secret(simulator: str, session: aiohttp.ClientSession,
                                         authority: tuple[str, Path]) -> None:
    """A stream authenticates with the token and ends with usage."""
    provider = make(simulator, session, client_secret(authority))
    try:
        chunks = [c async for c in provider.stream_chat(chat({**HELLO, "stream": True}),
                                                         target=TARGET)]
        assert chunks[-1]["usage"]["completion_tokens"] > 0
        [record] = await received(session, simulator)
        assert (header(record, "authorization") or "").startswith("Bearer ey")
    finally:
        await provider.aclose()


async def test_refused_client_secret_is_a_502_without_the_secret(
    simulator: str, session: aiohttp.ClientSession, authority: tuple[str, Path]
) -> None:
    """Entra refusing the secret (AADSTS7000215) is a 502 naming the provider, no secret."""
    wrong = "wrong-client-secret-0123456789"
    provider = make(simulator, session, client_secret(authority, wrong))
    try:
        with pytest.raises(errors.UpstreamError) as caught:
            await provider.chat(chat(HELLO), target=TARGET)
    finally:
        await provider.aclose()
    assert caught.value.status_code == 502
    message = caught.value.message
    assert "azure_openai provider at 127.0.0.1" in message and "AADSTS7000215" in message
    assert wrong not in str(caught.value.body()) and entra.CLIENT_SECRET not in message


async def test_echoed_bearer_token_is_scrubbed(simulator: str, session: aiohttp.ClientSession,
                                               authority: tuple[str, Path]) -> None:
    """An upstream 401 echoing the Authorization header never shows the token."""
    provider = make(simulator, session, client_secret(authority),
                    headers={"X-Return-Error": "401", "X-Sim-Echo-Key": "1"})
    try:
        with pytest.raises(errors.UpstreamError) as caught:
            await provider.chat(chat(HELLO), target=TARGET)
        [record] = await received(session, simulator)
    finally:
        await provider.aclose()
    token = (header(record, "authorization") or "").removeprefix("Bearer ")
    assert len(token) > 20 and token not in str(caught.value.body())
    assert "[redacted]" in str(caught.value.body())


async def test_workload_identity_trades_the_federated_token(
    simulator: str, session: aiohttp.ClientSession, authority: tuple[str, Path],
    tmp_path: Path,
) -> None:
    """Workload identity posts the token file's assertion and gets a token that works."""
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(entra.FEDERATED_TOKEN)
    url, ca = authority
    auth = {"type": "workload_identity", "tenant_id": entra.TENANT_ID,
            "client_id": entra.CLIENT_ID, "token_file": str(token_file), "authority": url,
            "ca_bundle": str(ca)}
    provider = make(simulator, session, auth)
    try:
        result = await provider.chat(chat(HELLO), target=TARGET)
        assert result.body["object"] == "chat.completion"
        token_file.write_text("someone-elses-assertion")
        refused = make(simulator, session, auth)
        with pytest.raises(errors.UpstreamError, match="AADSTS700213"):
            await refused.chat(chat(HELLO), target=TARGET)
        await refused.aclose()
    finally:
        await provider.aclose()


async def test_managed_identity_through_app_service_endpoint(
    simulator: str, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With App Service's IDENTITY_ENDPOINT/IDENTITY_HEADER, the managed identity's token works
    and names the user-assigned client_id asked for."""
    monkeypatch.setenv("IDENTITY_ENDPOINT", simulator + entra.MSI_PATH)
    monkeypatch.setenv("IDENTITY_HEADER", entra.IDENTITY_HEADER)
    provider = make(simulator, session, {"type": "managed_identity", "client_id": "mi-0001"})
    try:
        result = await provider.chat(chat(HELLO), target=TARGET)
        assert result.body["object"] == "chat.completion"
        [record] = await received(session, simulator)
        assert claims(header(record, "authorization") or "")["appid"] == "mi-0001"
        [token_request] = (await received(session, simulator, limit=2))[:1]
        assert token_request["path"] == entra.MSI_PATH
        assert "resource=https://cognitiveservices.azure.com&" in token_request["query"]
    finally:
        await provider.aclose()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}".strip()}


@pytest.mark.parametrize("case", ["missing", "unknown", "expired", "wrong-audience"])
def test_azure_routes_refuse_bad_tokens(simulator: str, case: str) -> None:
    """A missing, foreign, expired or wrong-audience token is Azure's 401 statusCode body."""
    now = time.time()
    token = {
        "missing": "",
        "unknown": "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjk5OTk5OTk5OTl9.c2lnbmF0dXJl",
        "expired": entra.issue(tenant=entra.TENANT_ID, client_id=entra.CLIENT_ID,
                               lifetime_s=3599, now=now - 4000)[0],
        "wrong-audience": entra.issue(tenant=entra.TENANT_ID, client_id=entra.CLIENT_ID,
                                      lifetime_s=3599, audience="https://vault.azure.net")[0],
    }[case]
    answer = httpx.post(f"{simulator}/openai/deployments/d/chat/completions",
                        params={"api-version": "2024-10-21"}, headers=bearer(token),
                        json=HELLO)
    assert answer.status_code == 401
    assert answer.json() == {"statusCode": 401, "message": entra.UNAUTHORIZED}


def test_openai_sdk_azure_client_with_simulator_token(simulator: str) -> None:
    """The openai SDK's Azure client, given a simulator token, parses chat and embeddings; a
    stale token is its AuthenticationError."""
    token, _ = entra.issue(tenant=entra.TENANT_ID, client_id=entra.CLIENT_ID, lifetime_s=60)
    with openai.AzureOpenAI(azure_endpoint=simulator, azure_ad_token=token,
                            api_version="2024-10-21", max_retries=0) as client:
        answer = client.chat.completions.create(model="gpt4o", messages=[
            {"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content
        assert client.embeddings.create(model="ada", input="hi").data[0].embedding
    stale, _ = entra.issue(tenant=entra.TENANT_ID, client_id=entra.CLIENT_ID, lifetime_s=60,
                           now=time.time() - 120)
    with (openai.AzureOpenAI(azure_endpoint=simulator, azure_ad_token=stale,
                             api_version="2024-10-21", max_retries=0) as client,
          pytest.raises(openai.AuthenticationError)):
        client.chat.completions.create(model="gpt4o", messages=[
            {"role": "user", "content": "hi"}])


@pytest.mark.parametrize(
    ("path", "form", "status", "code"),
    [
        ("/other-tenant/oauth2/v2.0/token", {}, 400, 90002),
        (TOKEN_PATH, {"client_id": "nobody"}, 400, 700016),
        (TOKEN_PATH, {"client_secret": "nope"}, 401, 7000215),
        (TOKEN_PATH, {"scope": "https://cognitiveservices.azure.com/user.read"}, 400, 1002012),
        (TOKEN_PATH, {"grant_type": "password"}, 400, 70003),
    ],
)
def test_token_endpoint_refusals_in_entra_shape(simulator: str, path: str, form: dict[str, str],
                                                status: int, code: int) -> None:
    """Entra's refusals: status, error code list and an AADSTS description."""
    data = {"grant_type": "client_credentials", "client_id": entra.CLIENT_ID,
            "client_secret": entra.CLIENT_SECRET, "scope": SCOPE, **form}
    answer = httpx.post(simulator + path, data=data)
    assert answer.status_code == status
    body = answer.json()
    assert body["error_codes"] == [code]
    assert body["error_description"].startswith(f"AADSTS{code}: ")
    assert {"error", "timestamp", "trace_id", "correlation_id", "error_uri"} <= set(body)


def test_token_endpoint_issues_tokens_of_the_configured_lifetime(simulator: str) -> None:
    """A good client-credentials request gets a Bearer token that the Azure routes accept."""
    answer = httpx.post(simulator + TOKEN_PATH, data={
        "grant_type": "client_credentials", "client_id": entra.CLIENT_ID,
        "client_secret": entra.CLIENT_SECRET, "scope": SCOPE})
    assert answer.status_code == 200
    body = answer.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == body["ext_expires_in"] == SimOptions().entra_token_lifetime_s
    used = httpx.post(f"{simulator}/openai/deployments/d/chat/completions",
                      params={"api-version": "2024-10-21"},
                      headers=bearer(body["access_token"]), json=HELLO)
    assert used.status_code == 200


FIXTURES = Path(__file__).parent / "fixtures" / "azure"


def fixture(name: str) -> Json:
    loaded: Json = json.loads((FIXTURES / name).read_text())
    loaded.pop("_source")
    return loaded


@pytest.mark.parametrize(("name", "status"), [("entra_token_success.json", 200),
                                              ("entra_token_error.json", 400)])
async def test_published_token_answers_through_azure_identity(tmp_path: Path, name: str,
                                                              status: int) -> None:
    """Entra's published examples, replayed: the success is a token lasting its expires_in;
    the error a 502 carrying its AADSTS code."""
    example = fixture(name)
    upstream = Replay()
    upstream.answer(json.dumps(example).encode(), status=status)
    with serve_tls(upstream, tmp_path) as (url, ca):
        config = AzureOpenAIProvider.model_validate({
            "type": "azure_openai", "endpoint": "https://res.openai.azure.com",
            "auth": client_secret((url, ca))})
        assert config.auth is not None
        cred = azure_auth.credential(config.auth)
        tokens = azure_auth.BearerTokens(azure_auth.credential_fetch(cred),
                                         describe=azure.describe(config),
                                         scrubber=Scrubber(config.secrets()))
        try:
            if status == 200:
                before = time.time()
                token = await tokens.get()
                assert token.value == example["access_token"]
                assert token.header == f"Bearer {example['access_token']}"
                assert before + 3599 - 1 <= token.expires_at <= time.time() + 3599
                assert token.refresh_at == token.expires_at - 300
            else:
                with pytest.raises(errors.UpstreamError) as caught:
                    await tokens.get()
                assert "AADSTS70011" in caught.value.message
                assert "azure_openai provider at res.openai.azure.com" in caught.value.message
        finally:
            await cred.close()


def test_simulator_token_answers_have_the_published_fields(simulator: str) -> None:
    """The simulator's success and error bodies carry every field of Entra's examples."""
    good = httpx.post(simulator + TOKEN_PATH, data={
        "grant_type": "client_credentials", "client_id": entra.CLIENT_ID,
        "client_secret": entra.CLIENT_SECRET, "scope": SCOPE}).json()
    assert set(fixture("entra_token_success.json")) <= set(good)
    bad = httpx.post(simulator + TOKEN_PATH, data={
        "grant_type": "client_credentials", "client_id": entra.CLIENT_ID,
        "client_secret": entra.CLIENT_SECRET, "scope": "https://foo/read"}).json()
    published = fixture("entra_token_error.json")
    assert set(published) <= set(bad)
    assert bad["error_description"].split("\r\n")[1].startswith("Trace ID: ")
    assert published["error_description"].split("\r\n")[1].startswith("Trace ID: ")
