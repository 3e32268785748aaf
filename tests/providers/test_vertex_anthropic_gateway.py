"""Claude on Vertex AI (``type: vertex_anthropic``) behind a running gateway, against the
simulator: the openai SDK's chat, stream, tools and structured output translated; the anthropic
SDK's /v1/messages native; throttling, refused credentials, token refresh, cancellation, cost at
the shipped prices."""

# The gateway fixture lives in tests/api/conftest.py, outside this directory: imported here so
# pytest finds it, and then named by each test's parameter (which ruff reads as a redefinition).
# ruff: noqa: F811

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from openai.types.chat import ChatCompletionMessageParam

from app.pricing import PriceBook, shipped_prices
from app.simulator import SimOptions, create_app
from tests.api.conftest import (  # noqa: F401 - run_gateway is a fixture, used by name
    MASTER_KEY,
    GatewayFactory,
    run_gateway,
    sim_config,
)
from tests.servers import serve

MODEL = "claude-sonnet-4@20250514"
PATH = ("/vertex/v1/projects/sim-project/locations/us-east5/publishers/anthropic/models/"
        f"{MODEL}")
USER: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Tell me about switchboards"},
]
LOOKUP: Any = {"type": "function", "function": {
    "name": "lookup", "description": "Look a word up",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}},
                   "required": ["q"]}}}
SCHEMA: Any = {"type": "object", "properties": {"answer": {"type": "string"}},
               "required": ["answer"], "additionalProperties": False}


@pytest.fixture(scope="module")
def service_account_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def config(simulator: str, private_key: str, headers: dict[str, str] | None = None,
           *, model: str = MODEL) -> dict[str, Any]:
    """Model ``claude`` (Vertex's ``model``, Claude Sonnet 4 unless given) on one
    ``vertex_anthropic`` provider."""
    key = orjson.dumps({
        "type": "service_account", "project_id": "sim-project", "private_key_id": "k1",
        "private_key": private_key, "client_email": "gw@sim-project.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": f"{simulator}/vertex/token"}).decode()
    raw = sim_config(simulator, claude={"targets": [{"provider": "vclaude", "model": model}]})
    raw["providers"]["vclaude"] = {"type": "vertex_anthropic", "project": "sim-project",
                                   "location": "us-east5", "headers": headers or {},
                                   "base_url": simulator + "/vertex/v1",
                                   "credentials_json": key}
    return raw


def last_request(simulator: str) -> dict[str, Any]:
    (record,) = httpx.get(simulator + "/_sim/requests", params={"limit": "1"}).json()
    found: dict[str, Any] = record
    return found


def test_chat_stream_tools_structured_output(run_gateway: GatewayFactory, simulator: str,
                                             service_account_key: str) -> None:
    """The openai SDK's chat, stream (usage last), forced tool call and JSON schema, each
    translated to Claude's Messages body on rawPredict / streamRawPredict."""
    with run_gateway(config(simulator, service_account_key)) as gw:
        client = gw.client()
        reply = client.chat.completions.create(model="claude", messages=USER, max_tokens=50)
        content = reply.choices[0].message.content
        assert content and content.startswith("Simulated reply to: Tell me")
        assert reply.usage is not None and reply.usage.completion_tokens == 16
        sent = last_request(simulator)
        assert sent["path"] == PATH + ":rawPredict"
        assert sent["body"]["anthropic_version"] == "vertex-2023-10-16"
        assert "model" not in sent["body"] and sent["body"]["system"] == "Be brief."
        chunks = list(client.chat.completions.create(
            model="claude", messages=USER, stream=True, stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == content
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 16
        assert last_request(simulator)["path"] == PATH + ":streamRawPredict"
        tool = client.chat.completions.create(model="claude", messages=USER, tools=[LOOKUP],
                                              tool_choice="required")
        calls = tool.choices[0].message.tool_calls
        assert tool.choices[0].finish_reason == "tool_calls"
        assert calls and calls[0].function.name == "lookup"  # type: ignore[union-attr]
        assert json.loads(calls[0].function.arguments) == {"q": ""}  # type: ignore[union-attr]
        structured = client.chat.completions.create(model="claude", messages=USER,
                                                    response_format={
            "type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}})
        assert last_request(simulator)["body"]["output_config"]["format"] == {
            "type": "json_schema", "schema": SCHEMA}
        assert json.loads(structured.choices[0].message.content or "") == {"answer": ""}
        with pytest.raises(openai.BadRequestError) as raised:
            client.chat.completions.create(model="claude", messages=USER,
                                           response_format={"type": "json_object"})
        assert raised.value.body["param"] == "response_format"  # type: ignore[index]


def test_messages_native_plain_and_streamed(run_gateway: GatewayFactory, simulator: str,
                                            service_account_key: str) -> None:
    """The anthropic SDK's /v1/messages reaches Claude on Vertex untranslated: the body goes
    on without ``model``, with ``anthropic_version: vertex-2023-10-16``; the answers parse."""
    with run_gateway(config(simulator, service_account_key)) as gw:
        client = anthropic.Anthropic(base_url=gw.url, api_key=MASTER_KEY, max_retries=0)
        message = client.messages.create(model="claude", max_tokens=6, messages=[
            {"role": "user", "content": "Tell me about tides"}], extra_body={"top_k": 5})
        assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 6
        assert message.id.startswith("msg_vrtx_")
        sent = last_request(simulator)
        assert sent["path"] == PATH + ":rawPredict"
        assert sent["body"] == {"max_tokens": 6, "top_k": 5,
                                "anthropic_version": "vertex-2023-10-16",
                                "messages": [{"role": "user", "content": "Tell me about tides"}]}
        with client.messages.stream(model="claude", max_tokens=32, messages=[
                {"role": "user", "content": "Tell me about tides"}]) as events:
            text = "".join(events.text_stream)
            final = events.get_final_message()
        assert text.startswith("Simulated reply") and final.stop_reason == "end_turn"
        assert final.usage.output_tokens == 16
        sent = last_request(simulator)
        assert sent["path"] == PATH + ":streamRawPredict"
        assert sent["body"]["stream"] is True and "model" not in sent["body"]
        assert sent["body"]["anthropic_version"] == "vertex-2023-10-16"


def test_quota_429_stays_429_with_retry_after(run_gateway: GatewayFactory, simulator: str,
                                              service_account_key: str) -> None:
    """Vertex's RESOURCE_EXHAUSTED reaches the client as a 429 with Retry-After."""
    raw = config(simulator, service_account_key, headers={"X-Return-Error": "429"})
    with run_gateway(raw) as gw, pytest.raises(openai.RateLimitError) as raised:
        gw.client().chat.completions.create(model="claude", messages=USER)
    assert raised.value.response.headers["retry-after"] == "1"


def test_refused_token_is_502_without_the_token(run_gateway: GatewayFactory, simulator: str,
                                                service_account_key: str) -> None:
    """Vertex's 401 echoing the bearer token: a 502 naming Vertex AI, the token nowhere."""
    raw = config(simulator, service_account_key,
                 headers={"X-Return-Error": "401", "X-Sim-Echo-Key": "1"})
    with run_gateway(raw) as gw, pytest.raises(openai.APIStatusError) as raised:
        gw.client().chat.completions.create(model="claude", messages=USER)
    assert raised.value.status_code == 502
    assert "Vertex AI (project sim-project, us-east5) refused" in raised.value.message
    token = last_request(simulator)["headers"]["authorization"].removeprefix("Bearer ")
    assert token.startswith("ya29.") and token not in raised.value.response.text
    assert "PRIVATE KEY" not in raised.value.response.text
    assert gw.sink.records[-1].error_message and token not in gw.sink.records[-1].error_message


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_mid_stream_error_never_carries_the_token(run_gateway: GatewayFactory, simulator: str,
                                                  service_account_key: str, path: str) -> None:
    """A stream whose in-band error echoes the bearer token, translated (chat) or native
    (/v1/messages, ``event: error``): the client's last frame and the call record show
    ``[redacted]``, never the access token."""
    raw = config(simulator, service_account_key,
                 headers={"X-Sim-Error-After": "1", "X-Sim-Echo-Key": "1"})
    body = {"model": "claude", "max_tokens": 50, "stream": True,
            "messages": [{"role": "user", "content": "Tell me about switchboards"}]}
    with run_gateway(raw) as gw:
        with gw.http().stream("POST", path, headers={"x-request-id": "claude-mid"},
                              json=body) as answer:
            text = answer.read().decode()
        token = last_request(simulator)["headers"]["authorization"].removeprefix("Bearer ")
        record = gw.sink.by_id("claude-mid")
    frames = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    assert answer.status_code == 200 and "error" in frames[-1]
    if path == "/v1/messages":
        assert "event: error" in text and frames[-1]["type"] == "error"
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


def test_token_refreshed_mid_run(run_gateway: GatewayFactory, short_token_simulator: str,
                                 service_account_key: str) -> None:
    """Once the first token has lapsed at the upstream, the next call carries a new one."""
    sim = short_token_simulator
    with run_gateway(config(sim, service_account_key)) as gw:
        client = gw.client()
        client.chat.completions.create(model="claude", messages=USER)
        first = last_request(sim)["headers"]["authorization"]
        time.sleep(3.2)  # the simulator's token lifetime: let it lapse
        reply = client.chat.completions.create(model="claude", messages=USER)
        second = last_request(sim)["headers"]["authorization"]
    assert reply.choices[0].message.content and second != first
    tokens = [r for r in httpx.get(sim + "/_sim/requests", params={"limit": "10"}).json()
              if r["path"] == "/vertex/token"]
    assert len(tokens) >= 2


def test_client_leaving_a_stream_cancels_the_upstream(run_gateway: GatewayFactory,
                                                      simulator: str,
                                                      service_account_key: str) -> None:
    """A client leaving mid-stream closes the streamRawPredict connection at the simulator."""
    slow = {"X-Sim-TPOT-Ms": "50", "X-Sim-Completion-Tokens": "200"}
    with run_gateway(config(simulator, service_account_key, headers=slow)) as gw:
        assert gw.leave_a_stream(simulator, request_id="vclaude-gone", body={
            "model": "claude", "messages": USER, "stream": True}) == 1
        assert gw.sink.by_id("vclaude-gone").status == "cancelled"


def test_vertex_ids_take_anthropics_list_price() -> None:
    """A Vertex Claude id (``claude-sonnet-4@20250514``) is priced as the model before its
    ``@version``: Anthropic's list price, which Vertex charges on its global endpoint."""
    book = PriceBook(shipped_prices())
    assert book.price(MODEL) is not None
    assert book.price(MODEL) == book.price("claude-sonnet-4-20250514")


@pytest.mark.parametrize(("model", "rates"), [
    # Anthropic's published rates per million tokens: input, cache read, 5-minute cache
    # write, output (https://www.anthropic.com/pricing#api, as app/pricing.yaml lists them).
    (MODEL, (3.00, 0.30, 3.75, 15.00)),
    ("claude-3-5-haiku@20241022", (0.80, 0.08, 1.00, 4.00)),
])
def test_cached_prompt_cost_at_the_shipped_price(run_gateway: GatewayFactory, simulator: str,
                                                 service_account_key: str, model: str,
                                                 rates: tuple[float, float, float, float]
                                                 ) -> None:
    """With no ``pricing:`` in the config, a Vertex Claude answer's fresh input, cache read,
    cache write and output are each billed at Anthropic's list rate, computed by hand."""
    raw = config(simulator, service_account_key, headers={"X-Sim-Cache-Read-Tokens": "4"},
                 model=model)
    assert "pricing" not in raw
    long_system = "You answer questions about the sea and its tides in detail."
    with run_gateway(raw) as gw:
        messages: Any = [
            {"role": "system", "content": [{"type": "text", "text": long_system,
                                            "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": "Tell me about tides"}]
        raw_reply = gw.client().chat.completions.with_raw_response.create(
            model="claude", max_tokens=5, messages=messages)
        assert last_request(simulator)["body"]["system"] == [
            {"type": "text", "text": long_system, "cache_control": {"type": "ephemeral"}}]
        usage = raw_reply.parse().usage
        assert usage is not None and usage.prompt_tokens_details is not None
        assert usage.prompt_tokens_details.cached_tokens == 4
        written = usage.prompt_tokens_details.model_dump()["cache_write_tokens"]
        fresh = usage.prompt_tokens - 4 - written
        assert written > 0 and fresh > 0 and usage.completion_tokens == 5
        fresh_rate, read_rate, write_rate, output_rate = rates
        expected = (fresh * fresh_rate + 4 * read_rate + written * write_rate
                    + 5 * output_rate) / 1_000_000
        assert gw.sink.records[-1].cost_usd == pytest.approx(expected, rel=1e-9)
        assert float(raw_reply.headers["x-switchboard-cost-usd"]) == pytest.approx(
            expected, rel=1e-6)


def test_an_image_link_is_refused_before_vertex_and_falls_back(
        run_gateway: GatewayFactory, simulator: str, service_account_key: str) -> None:
    """Claude on Vertex takes base64 images only: an image link is a 400 naming it with no
    upstream request (the simulator refuses a url source as Vertex does), and a model with
    another target after it is served by that target; a data: URL still goes to Claude."""
    raw = config(simulator, service_account_key)
    raw["models"]["both"] = {"targets": [{"provider": "vclaude", "model": MODEL},
                                         {"provider": "sim", "model": "gpt-4o-mini"}]}
    link = [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]
    png = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4"
           "nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg==")
    inline = [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": png}}]}]
    with run_gateway(raw) as gw:
        before = vertex_calls(simulator)
        refused = gw.http().post("/v1/chat/completions", json={"model": "claude",
                                                               "messages": link})
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"] == "messages[0].content[1].image_url.url"
        assert vertex_calls(simulator) == before
        served = gw.http().post("/v1/chat/completions", json={"model": "both",
                                                              "messages": link})
        assert served.status_code == 200, served.text
        assert served.headers["x-switchboard-provider"] == "sim"
        claude = gw.http().post("/v1/chat/completions", json={"model": "claude",
                                                              "messages": inline})
        assert claude.status_code == 200, claude.text
        assert vertex_calls(simulator) == before + 1
    body = last_request(simulator)["body"]
    assert body["messages"][0]["content"][1]["source"]["type"] == "base64"


def vertex_calls(simulator: str) -> int:
    """How many requests the simulator's Claude-on-Vertex routes have had."""
    stats = httpx.get(simulator + "/_sim/stats").json()
    return sum(count for path, count in stats["requests"].items() if ":rawPredict" in path
               or ":streamRawPredict" in path)
