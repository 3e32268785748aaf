"""``type: azure_openai`` with Entra ID (client secret) behind a running gateway, driven by the
openai SDK, against the simulator: chat, streams with usage, embeddings, a token that expires
mid-run, a refused secret, throttling and a leaked token (in an error answer and in a stream's
error frame)."""

from __future__ import annotations

import base64
import json
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from app.config import parse_config
from app.main import create_app
from app.simulator import SimOptions
from app.simulator import azure_entra as entra
from app.simulator import create_app as simulator_app
from app.simulator.azure_tls import serve_tls
from tests.api.conftest import MASTER_KEY, ListSink, RunningGateway, settings_in
from tests.servers import serve

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Tell me about tides"}]
TOKEN_PATH = f"/{entra.TENANT_ID}/oauth2/v2.0/token"
WRONG_SECRET = "wrong-client-secret-0123456789"


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """Entra's token endpoint played over TLS (tokens last the default hour)."""
    with serve_tls(simulator_app(SimOptions()), tmp_path_factory.mktemp("tls")) as served:
        yield served


def config(simulator: str, authority: tuple[str, Path], *, secret: str = entra.CLIENT_SECRET,
           **headers: str) -> dict[str, Any]:
    url, ca = authority
    auth = {"type": "client_secret", "tenant_id": entra.TENANT_ID, "client_id": entra.CLIENT_ID,
            "client_secret": secret, "authority": url, "ca_bundle": str(ca)}
    return {
        "providers": {"az": {"type": "azure_openai", "endpoint": simulator, "auth": auth,
                             "headers": headers}},
        "models": {"gpt": {"targets": [{"provider": "az", "model": "gpt4o-prod"}]},
                   "embed": {"targets": [{"provider": "az", "model": "ada-prod"}]}},
        "drift": {"embedding": {"sample_rate": 0}},
        "retries": {"attempts": 0},
    }


@contextmanager
def gateway(tmp_path: Path, raw: dict[str, Any]) -> Iterator[RunningGateway]:
    sink = ListSink()
    app = create_app(settings_in(tmp_path), config=parse_config(raw, {}), sink=sink,
                     strict_telemetry=True)
    with serve(app) as url:
        running = RunningGateway(url=url, sink=sink)
        try:
            yield running
        finally:
            running.close_clients()


def seen_tokens(simulator: str, limit: int) -> list[str]:
    """The bearer tokens of the simulator's last ``limit`` Azure requests, oldest first."""
    records = httpx.get(f"{simulator}/_sim/requests", params={"limit": str(limit)}).json()
    return [r["headers"]["authorization"].removeprefix("Bearer ") for r in records
            if r["path"].startswith("/openai/deployments/")]


def expiry(token: str) -> int:
    payload = token.split(".")[1]
    exp: int = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"]
    return exp


def token_requests(authority: tuple[str, Path]) -> int:
    trust = ssl.create_default_context(cafile=str(authority[1]))
    stats = httpx.get(f"{authority[0]}/_sim/stats", verify=trust).json()
    count: int = stats["requests"].get(TOKEN_PATH, 0)
    return count


def test_chat_stream_and_embeddings_with_client_secret(
    tmp_path: Path, simulator: str, authority: tuple[str, Path]
) -> None:
    """Chat, a stream with usage and embeddings all go through on one Entra token."""
    before = token_requests(authority)
    with gateway(tmp_path, config(simulator, authority)) as gw:
        client = gw.client()
        reply = client.chat.completions.create(model="gpt", messages=USER, max_tokens=20)
        assert reply.choices[0].message.content and reply.usage is not None
        stream = client.chat.completions.create(model="gpt", messages=USER, max_tokens=20,
                                                stream=True,
                                                stream_options={"include_usage": True})
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
        vectors = client.embeddings.create(model="embed", input=["tides", "moon"])
        assert len(vectors.data) == 2 and vectors.data[0].embedding
        tokens = seen_tokens(simulator, 3)
    assert len(tokens) == 3 and len(set(tokens)) == 1
    assert token_requests(authority) == before + 1


def test_token_expiring_mid_run_is_refreshed(tmp_path: Path, simulator: str) -> None:
    """A 2-second token expires between calls; the next calls get a new one and succeed."""
    with serve_tls(simulator_app(SimOptions(entra_token_lifetime_s=2)), tmp_path) as short, \
            gateway(tmp_path, config(simulator, short)) as gw:
        client = gw.client()
        client.chat.completions.create(model="gpt", messages=USER, max_tokens=5)
        [first] = seen_tokens(simulator, 1)
        time.sleep(max(0.0, expiry(first) - time.time()) + 0.3)
        assert httpx.post(f"{simulator}/openai/deployments/d/chat/completions",
                          params={"api-version": "2024-10-21"},
                          headers={"Authorization": f"Bearer {first}"},
                          json={"messages": USER}).status_code == 401
        reply = client.chat.completions.create(model="gpt", messages=USER, max_tokens=5)
        assert reply.choices[0].message.content
        stream = list(client.chat.completions.create(model="gpt", messages=USER, max_tokens=5,
                                                     stream=True))
        assert stream[-1].choices[0].finish_reason
        later = seen_tokens(simulator, 3)[-2:]
        assert later[0] == later[1] != first
        assert token_requests(short) == 2


def test_refused_client_secret_is_a_502_naming_the_provider(
    tmp_path: Path, simulator: str, authority: tuple[str, Path]
) -> None:
    """Entra refusing the secret is a 502 naming the provider, for calls and streams, with
    neither the configured secret nor the right one in it."""
    with gateway(tmp_path, config(simulator, authority, secret=WRONG_SECRET)) as gw:
        for stream in (False, True):
            answer = gw.http().post("/v1/chat/completions", json={
                "model": "gpt", "messages": USER, "stream": stream})
            assert answer.status_code == 502
            message = answer.json()["error"]["message"]
            assert "azure_openai provider at 127.0.0.1" in message
            assert "Entra ID token" in message and "AADSTS7000215" in message
            assert WRONG_SECRET not in answer.text and entra.CLIENT_SECRET not in answer.text


def test_upstream_429_keeps_status_and_retry_after(
    tmp_path: Path, simulator: str, authority: tuple[str, Path]
) -> None:
    """Azure throttling a token-authenticated call is the client's 429 with Retry-After."""
    with gateway(tmp_path, config(simulator, authority, **{"X-Return-Error": "429"})) as gw:
        answer = gw.http().post("/v1/chat/completions", json={"model": "gpt", "messages": USER})
        assert answer.status_code == 429
        assert answer.headers["retry-after"] == "1"
        assert answer.json()["error"]["type"] == "rate_limit_error"
        with pytest.raises(openai.RateLimitError):
            gw.client().chat.completions.create(model="gpt", messages=USER)


def test_upstream_401_never_leaks_the_token(
    tmp_path: Path, simulator: str, authority: tuple[str, Path]
) -> None:
    """An upstream 401 echoing the Authorization header is a 502 without the token."""
    headers = {"X-Return-Error": "401", "X-Sim-Echo-Key": "1"}
    with gateway(tmp_path, config(simulator, authority, **headers)) as gw:
        for stream in (False, True):
            answer = gw.http().post("/v1/chat/completions", json={
                "model": "gpt", "messages": USER, "stream": stream})
            assert answer.status_code == 502
            [token] = seen_tokens(simulator, 1)
            assert len(token) > 20 and token not in answer.text
            assert MASTER_KEY not in answer.text


def test_mid_stream_error_never_carries_the_token(
    tmp_path: Path, simulator: str, authority: tuple[str, Path]
) -> None:
    """A stream whose in-band error frame echoes the Entra token: the client's error frame and
    the call record show ``[redacted]``, never the token."""
    headers = {"X-Sim-Error-After": "1", "X-Sim-Echo-Key": "1"}
    with gateway(tmp_path, config(simulator, authority, **headers)) as gw:
        with gw.http().stream("POST", "/v1/chat/completions",
                              headers={"x-request-id": "entra-mid"},
                              json={"model": "gpt", "messages": USER, "stream": True}) as answer:
            text = answer.read().decode()
        [token] = seen_tokens(simulator, 1)
        record = gw.sink.by_id("entra-mid")
    frames = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    assert answer.status_code == 200 and "error" in frames[-1]
    assert len(token) > 20 and token not in text
    assert "Bearer [redacted]" in frames[-1]["error"]["message"]
    assert record.error_message and token not in record.error_message
    assert "[redacted]" in record.error_message
