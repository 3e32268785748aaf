"""Gemini API and Vertex AI targets behind a running gateway, driven by the OpenAI SDK, against
the simulator; Google's published answer replayed; costs checked by hand."""

# The gateway fixture lives in tests/api/conftest.py, outside this directory: imported here so
# pytest finds it, and then named by each test's parameter (which ruff reads as a redefinition).
# ruff: noqa: F811

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel

from app.pricing import shipped_prices
from app.providers.gemini_response import to_chat_completion
from app.simulator import SimOptions, create_app
from app.simulator.gemini import API_KEY
from app.usage import Usage
from tests.api.conftest import (  # noqa: F401 - run_gateway is a fixture, used by name
    MASTER_KEY,
    GatewayFactory,
    run_gateway,
    sim_config,
)
from tests.servers import serve

FIXTURES = Path(__file__).parent / "fixtures" / "gemini"
USER: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Tell me about switchboards"},
]
LOOKUP: Any = {"type": "function", "function": {
    "name": "lookup", "description": "Look a word up",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}},
                   "required": ["q"]}}}
SCHEMA: Any = {"type": "object", "properties": {"answer": {"type": "string"}},
          "required": ["answer"]}


@pytest.fixture(scope="module")
def service_account_key() -> str:
    """A throwaway RSA private key (PEM) for the test service account."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def key_json(simulator: str, private_key: str) -> str:
    return orjson.dumps({
        "type": "service_account", "project_id": "sim-project", "private_key_id": "k1",
        "private_key": private_key, "client_email": "gw@sim-project.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": f"{simulator}/vertex/token"}).decode()


def config(simulator: str, kind: str, private_key: str, *, key: str = API_KEY,
           params: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
           model: str = "gemini-2.5-flash") -> dict[str, Any]:
    """Models ``chat`` (``model``, gemini-2.5-flash unless given) and ``embed``
    (gemini-embedding-001) on one provider of type ``kind``."""
    headers = headers or {}
    target: dict[str, Any] = {"provider": "google", "model": model}
    if params:
        target["params"] = params
    raw = sim_config(simulator, chat={"targets": [target]}, embed={
        "targets": [{"provider": "google", "model": "gemini-embedding-001"}]})
    if kind == "gemini":
        raw["providers"]["google"] = {"type": "gemini", "api_key": key, "headers": headers,
                                      "base_url": simulator + "/gemini/v1beta"}
    else:
        raw["providers"]["google"] = {"type": "vertex", "project": "sim-project",
                                      "location": "us-central1", "headers": headers,
                                      "base_url": simulator + "/vertex/v1",
                                      "credentials_json": key_json(simulator, private_key)}
    return raw


def last_request(simulator: str) -> dict[str, Any]:
    (record,) = httpx.get(simulator + "/_sim/requests", params={"limit": "1"}).json()
    found: dict[str, Any] = record
    return found


KINDS = pytest.mark.parametrize("kind", ["gemini", "vertex"])


@KINDS
def test_chat_stream_tools_structured_output(run_gateway: GatewayFactory, simulator: str,
                                             service_account_key: str, kind: str) -> None:
    """Chat, a stream ending in usage, a forced tool call and a JSON-schema answer, each
    through the gateway to the Google dialect and back."""
    with run_gateway(config(simulator, kind, service_account_key)) as gw:
        client = gw.client()
        reply = client.chat.completions.create(model="chat", messages=USER, max_tokens=50)
        assert reply.choices[0].message.content
        assert reply.choices[0].message.content.startswith("Simulated reply to: Tell me")
        assert reply.usage is not None and reply.usage.completion_tokens == 16
        sent = last_request(simulator)
        assert sent["path"].endswith("/models/gemini-2.5-flash:generateContent")
        assert sent["body"]["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
        chunks = list(client.chat.completions.create(
            model="chat", messages=USER, stream=True, stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == reply.choices[0].message.content
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 16
        tool = client.chat.completions.create(model="chat", messages=USER, tools=[LOOKUP],
                                              tool_choice="required")
        calls = tool.choices[0].message.tool_calls
        assert tool.choices[0].finish_reason == "tool_calls"
        assert calls and calls[0].function.name == "lookup"  # type: ignore[union-attr]
        assert json.loads(calls[0].function.arguments) == {"q": ""}  # type: ignore[union-attr]
        structured = client.chat.completions.create(
            model="chat", messages=USER, response_format={
                "type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}})
        assert json.loads(structured.choices[0].message.content or "") == {"answer": ""}
        assert last_request(simulator)["body"]["generationConfig"]["responseJsonSchema"] \
            == SCHEMA
        with pytest.raises(openai.BadRequestError) as raised:
            client.chat.completions.create(model="chat", messages=USER, logit_bias={"1": 1})
        assert raised.value.body["param"] == "logit_bias"  # type: ignore[index]


class Lookup(BaseModel):
    """The lookup tool's arguments."""

    q: str


@KINDS
def test_strict_tool_is_sent_as_validated_mode(run_gateway: GatewayFactory, simulator: str,
                                               service_account_key: str, kind: str) -> None:
    """A strict tool (the SDK's pydantic_function_tool) reaches Google as functionCallingConfig
    mode VALIDATED, with no strict field on the declaration, and its call comes back; it used
    to be dropped without a word."""
    with run_gateway(config(simulator, kind, service_account_key)) as gw:
        reply = gw.client().chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "lookup q"}],
            tools=[openai.pydantic_function_tool(Lookup, name="lookup")])
        sent = last_request(simulator)["body"]
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "VALIDATED"}}
    assert "strict" not in sent["tools"][0]["functionDeclarations"][0]
    calls = reply.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "lookup"  # type: ignore[union-attr]


@KINDS
def test_embeddings_float_and_base64(run_gateway: GatewayFactory, simulator: str,
                                     service_account_key: str, kind: str) -> None:
    """Embeddings in order, with dimensions, and base64 as little-endian float32."""
    with run_gateway(config(simulator, kind, service_account_key)) as gw:
        client = gw.client()
        floats = client.embeddings.create(model="embed", input=["one", "two"], dimensions=8)
        assert [d.index for d in floats.data] == [0, 1]
        assert [len(d.embedding) for d in floats.data] == [8, 8]
        encoded = gw.http().post("/v1/embeddings", json={
            "model": "embed", "input": ["one", "two"], "dimensions": 8,
            "encoding_format": "base64"}).json()
        decoded = struct.unpack("<8f", base64.b64decode(encoded["data"][1]["embedding"]))
        assert decoded == pytest.approx(floats.data[1].embedding, rel=1e-6)


@KINDS
def test_upstream_429_stays_429_with_retry_after(run_gateway: GatewayFactory, simulator: str,
                                                 service_account_key: str, kind: str) -> None:
    """RESOURCE_EXHAUSTED reaches the client as a 429 with Retry-After."""
    raw = config(simulator, kind, service_account_key, headers={"X-Return-Error": "429"})
    with run_gateway(raw) as gw, pytest.raises(openai.RateLimitError) as raised:
        gw.client().chat.completions.create(model="chat", messages=USER)
    assert raised.value.response.headers["retry-after"] == "1"


def test_refused_gemini_key_is_502_without_the_key(run_gateway: GatewayFactory,
                                                   simulator: str) -> None:
    """Google's API_KEY_INVALID: a 502 naming the Gemini API, the key nowhere in it."""
    secret = "AIza-not-quite-a-key-0123456789"
    with run_gateway(config(simulator, "gemini", "", key=secret)) as gw, \
            pytest.raises(openai.APIStatusError) as raised:
        gw.client().chat.completions.create(model="chat", messages=USER)
    assert raised.value.status_code == 502
    assert "Gemini API refused the gateway's credentials" in raised.value.message
    assert secret not in raised.value.response.text
    assert gw.sink.records[-1].error_message and secret not in gw.sink.records[-1].error_message


def test_refused_vertex_credential_is_502_without_the_token(run_gateway: GatewayFactory,
                                                            simulator: str,
                                                            service_account_key: str) -> None:
    """Vertex's 401 UNAUTHENTICATED echoing the bearer token: a 502 naming Vertex AI, the token
    nowhere in the answer or the call log."""
    raw = config(simulator, "vertex", service_account_key,
                 headers={"X-Return-Error": "401", "X-Sim-Echo-Key": "1"})
    with run_gateway(raw) as gw, pytest.raises(openai.APIStatusError) as raised:
        gw.client().chat.completions.create(model="chat", messages=USER)
    assert raised.value.status_code == 502
    assert "Vertex AI (project sim-project, us-central1) refused" in raised.value.message
    token = last_request(simulator)["headers"]["authorization"].removeprefix("Bearer ")
    assert token.startswith("ya29.") and token not in raised.value.response.text
    assert "PRIVATE KEY" not in raised.value.response.text
    assert gw.sink.records[-1].error_message and token not in gw.sink.records[-1].error_message


def test_vertex_mid_stream_error_never_carries_the_token(run_gateway: GatewayFactory,
                                                         simulator: str,
                                                         service_account_key: str) -> None:
    """A Vertex stream whose in-band error frame echoes the bearer token: the client's error
    frame and the call record show ``[redacted]``, never the access token."""
    raw = config(simulator, "vertex", service_account_key,
                 headers={"X-Sim-Error-After": "1", "X-Sim-Echo-Key": "1"})
    with run_gateway(raw) as gw:
        with gw.http().stream("POST", "/v1/chat/completions",
                              headers={"x-request-id": "vertex-mid"},
                              json={"model": "chat", "messages": USER, "stream": True}) as answer:
            text = answer.read().decode()
        token = last_request(simulator)["headers"]["authorization"].removeprefix("Bearer ")
        record = gw.sink.by_id("vertex-mid")
    frames = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    assert answer.status_code == 200 and "error" in frames[-1]
    assert token.startswith("ya29.") and token not in text
    assert "Bearer [redacted]" in frames[-1]["error"]["message"]
    assert record.error_message and token not in record.error_message
    assert "[redacted]" in record.error_message


@pytest.fixture
def short_token_simulator() -> Iterator[str]:
    """A simulator whose access tokens last three seconds (one second was shorter than a
    loaded CI machine took from minting a token to its use: the upstream refused it)."""
    with serve(create_app(SimOptions(google_token_lifetime_s=3))) as url:
        yield url


def test_vertex_token_refreshed_mid_run(run_gateway: GatewayFactory, short_token_simulator: str,
                                        service_account_key: str) -> None:
    """Once the first token has expired at the upstream, the next call carries a new one and
    succeeds."""
    sim = short_token_simulator
    with run_gateway(config(sim, "vertex", service_account_key)) as gw:
        client = gw.client()
        client.chat.completions.create(model="chat", messages=USER)
        first = last_request(sim)["headers"]["authorization"]
        time.sleep(3.2)  # the simulator's token lifetime: let it lapse
        reply = client.chat.completions.create(model="chat", messages=USER)
        second = last_request(sim)["headers"]["authorization"]
    assert reply.choices[0].message.content and second != first
    tokens = [r for r in httpx.get(sim + "/_sim/requests", params={"limit": "10"}).json()
              if r["path"] == "/vertex/token"]
    assert len(tokens) >= 2


@KINDS
def test_cost_of_cached_and_thinking_tokens(run_gateway: GatewayFactory, simulator: str,
                                            service_account_key: str, kind: str) -> None:
    """A call with cached input and thinking is priced at gemini-2.5-flash's published rates:
    fresh input, cached input and output (thinking included), computed by hand."""
    raw = config(simulator, kind, service_account_key,
                 params={"generationConfig": {"thinkingConfig": {"thinkingBudget": 64}}},
                 headers={"X-Sim-Cache-Read-Tokens": "4"})
    with run_gateway(raw) as gw:
        reply = gw.client().chat.completions.create(model="chat", messages=USER)
        usage = reply.usage
        assert usage is not None and usage.prompt_tokens_details is not None
        assert usage.completion_tokens_details is not None
        cached = usage.prompt_tokens_details.cached_tokens
        thinking = usage.completion_tokens_details.reasoning_tokens
        assert cached == 4 and thinking is not None and thinking > 0
        assert usage.completion_tokens == 16 + thinking
        fresh = usage.prompt_tokens - 4
        by_hand = (fresh * 0.30 + 4 * 0.03 + (16 + thinking) * 2.50) / 1_000_000
        (record,) = gw.sink.records
        assert record.cost_usd == pytest.approx(by_hand, rel=1e-9)


def test_published_answer_translates_and_prices() -> None:
    """Google's published thinking answer: text, finish and usage (thinking billed as output),
    and its cost at gemini-2.5-pro's rates by hand."""
    answer = json.loads((FIXTURES / "thinking_answer.json").read_text())
    body, usage = to_chat_completion(answer, model="m", created=1)
    assert body["model"] == "gemini-3-flash-preview"
    assert body["id"] == "chatcmpl-3w4Vad6yF-y1vdIP_q_zgAw"
    assert body["choices"][0]["message"]["content"].startswith("```\n---\n")
    assert "**TOTAL DUE:**" in body["choices"][0]["message"]["content"]
    assert body["choices"][0]["finish_reason"] == "stop"
    assert usage == Usage(prompt_tokens=34, completion_tokens=418 + 438, reasoning_tokens=438)
    assert usage.total_tokens == answer["usageMetadata"]["totalTokenCount"]
    price = shipped_prices()["gemini-2.5-pro"]
    assert price.cost(usage) == pytest.approx((34 * 1.25 + 856 * 10.00) / 1_000_000)


@KINDS
def test_client_leaving_a_stream_cancels_the_google_request(
    run_gateway: GatewayFactory, simulator: str, service_account_key: str, kind: str
) -> None:
    """A streaming client that leaves before the first token: the upstream stream is closed."""
    raw = config(simulator, kind, service_account_key, headers={"X-Sim-TTFT-Ms": "60000"})
    raw["streaming"] = {"keepalive_s": 0.1}
    stats = simulator + "/_sim/stats"
    started, before = (httpx.get(stats).json()[k] for k in ("streams_started",
                                                               "streams_cancelled"))
    with run_gateway(raw) as gw:
        with httpx.stream("POST", gw.url + "/v1/chat/completions", timeout=30,
                          headers={"Authorization": f"Bearer {MASTER_KEY}"},
                          json={"model": "chat", "messages": USER, "stream": True}) as answer:
            assert answer.status_code == 200
            # The reader is kept: a dropped ``iter_lines()`` generator is closed at once, and
            # httpx closes the connection with it, so the client would leave right after the
            # first keep-alive, before a busy machine's gateway had fetched Vertex's token and
            # sent the upstream request at all (nothing upstream to cancel then).
            lines = answer.iter_lines()
            assert next(lines) == ": keep-alive"
            # Leave only once the upstream stream is open. On a machine busy with a second test
            # run that took over 10 s (CI, 2026-12-06).
            assert _until(lambda: httpx.get(stats).json()["streams_started"] > started,
                          timeout_s=30), (httpx.get(stats).json(), gw.sink.records)
            assert not gw.sink.records, "the call ended while its client was still there"
        assert _until(lambda: bool(gw.sink.records), timeout_s=30)
        assert gw.sink.records[-1].status == "cancelled"
        assert _until(lambda: httpx.get(stats).json()["streams_cancelled"] > before,
                      timeout_s=30)


def _until(check: Any, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False
