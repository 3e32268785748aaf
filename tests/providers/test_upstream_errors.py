# ruff: noqa: F811  (pytest passes the imported run_gateway fixture by parameter name)
"""Upstream errors through a running gateway: no credential in any relayed or stored string
(issue 8 item 7), redirects never followed by any provider type (item 8), and the bytes
buffered before a cut connection relayed (item 14, the transport part)."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.base_protocol import BaseProtocol
from openai.types.chat import ChatCompletionMessageParam

from app import errors
from app.providers.http import SSEParser, Upstream, _buffered, new_session
from tests.api.conftest import (  # noqa: F401  (run_gateway: the fixture, used by name)
    GatewayFactory,
    RunningGateway,
    run_gateway,
    sim_config,
)
from tests.hardening_upstreams import canned, chat_answer, json_answer, redirect_answer

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


def _provider(kind: str, simulator: str, secret: str, headers: dict[str, str]) -> dict[str, Any]:
    if kind == "openai":
        return {"type": "openai", "base_url": simulator + "/v1", "api_key": secret,
                "headers": headers}
    if kind == "openai_header":  # the credential only in an extra header
        return {"type": "openai", "base_url": simulator + "/v1",
                "headers": {"Authorization": f"Bearer {secret}", **headers}}
    if kind == "vllm":
        return {"type": "vllm", "base_url": simulator + "/v1", "api_key": secret,
                "headers": headers}
    if kind == "azure_openai":
        return {"type": "azure_openai", "endpoint": simulator, "api_key": secret,
                "headers": headers}
    if kind == "cohere":
        return {"type": "cohere", "base_url": simulator, "api_key": secret, "headers": headers}
    if kind == "ai21":
        return {"type": "ai21", "base_url": simulator + "/studio/v1", "api_key": secret,
                "headers": headers}
    if kind == "huggingface":
        return {"type": "huggingface", "base_url": simulator + "/hf-router/v1",
                "api_key": secret, "headers": headers}
    assert kind == "anthropic"
    return {"type": "anthropic", "base_url": simulator, "api_key": secret, "headers": headers}


KINDS = ["openai", "openai_header", "vllm", "azure_openai", "anthropic", "cohere", "ai21",
         "huggingface"]


def _echoing(simulator: str, kind: str, secret: str, fault: dict[str, str]) -> dict[str, Any]:
    raw = sim_config(simulator, chat={"targets": [{"provider": "up", "model": "gpt-4o-mini"}]})
    raw["providers"]["up"] = _provider(kind, simulator, secret,
                                       {"X-Sim-Echo-Key": "1", **fault})
    return raw


def _assert_scrubbed(text: str, secret: str, gw: RunningGateway, request_id: str) -> None:
    assert secret not in text
    assert "[redacted]" in text, "the upstream echoed the key; the gateway must show it did"
    record = gw.sink.by_id(request_id)
    assert record.status == "error"
    assert record.error_message and secret not in record.error_message
    assert "[redacted]" in record.error_message


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("status", ["400", "422", "503"])
def test_upstream_error_fields_never_carry_the_key(run_gateway: GatewayFactory, simulator: str,
                                                   kind: str, status: str) -> None:
    """An upstream error that echoes the key in its message, type and param (which the gateway
    relays as message, code and param) reaches neither the client nor the record with it."""
    secret = f"sk-{kind}-secret-0123456789"
    with run_gateway(_echoing(simulator, kind, secret, {"X-Return-Error": status})) as gw:
        for stream in (False, True):
            request_id = f"echo-{kind}-{status}-{stream}"
            answer = gw.http().post("/v1/chat/completions", headers={"x-request-id": request_id},
                                    json={"model": "chat", "messages": USER, "stream": stream})
            assert answer.status_code >= 400
            error = answer.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}
            _assert_scrubbed(answer.text, secret, gw, request_id)


@pytest.mark.parametrize("kind", KINDS)
def test_upstream_payment_required_falls_back_and_is_never_the_clients(
        run_gateway: GatewayFactory, simulator: str, kind: str) -> None:
    """An upstream 402 (the gateway's account out of credit) is the target's failure: the next
    target serves the call; with none left, a 502 that says so, not the client's 402."""
    raw = sim_config(simulator, chat={"targets": [{"provider": "unpaid", "model": "gpt-4o-mini"},
                                                  {"provider": "sim", "model": "gpt-4o-mini"}]},
                     alone={"targets": [{"provider": "unpaid", "model": "gpt-4o-mini"}]})
    raw["providers"]["unpaid"] = _provider(kind, simulator, f"sk-{kind}-unpaid-0123456789",
                                           {"X-Return-Error": "402"})
    with run_gateway(raw) as gw:
        for stream in (False, True):
            request_id = f"unpaid-{kind}-{stream}"
            answer = gw.http().post("/v1/chat/completions", headers={"x-request-id": request_id},
                                    json={"model": "chat", "messages": USER, "stream": stream})
            assert answer.status_code == 200, answer.text
            record = gw.sink.by_id(request_id)
            assert [(a.provider, a.status) for a in record.attempts] == [("unpaid", 502),
                                                                          ("sim", 200)]
            answer = gw.http().post("/v1/chat/completions",
                                    json={"model": "alone", "messages": USER, "stream": stream})
            assert answer.status_code == 502, answer.text
            error = answer.json()["error"]
            assert error["type"] == "upstream_error"
            assert "402 Payment Required" in error["message"]


def test_upstream_402_maps_to_a_retryable_bad_gateway() -> None:
    """402 from any upstream is an UpstreamAuthFailed 502 (retryable, next target), its code
    kept or named."""
    error = errors.from_upstream_status(402, "credits exhausted")
    assert isinstance(error, errors.UpstreamAuthFailed)
    assert (error.status_code, error.retryable, error.code) == (
        502, True, "upstream_payment_required")
    assert errors.from_upstream_status(402, "x", code="billing_error").code == "billing_error"


@pytest.mark.parametrize("kind", KINDS)
def test_mid_stream_error_frame_never_carries_the_key(run_gateway: GatewayFactory,
                                                      simulator: str, kind: str) -> None:
    """An in-band error frame echoing the key: the client's error frame and the record are
    scrubbed; the chunks before it still arrive."""
    secret = f"sk-{kind}-midstream-0123456789"
    with run_gateway(_echoing(simulator, kind, secret, {"X-Sim-Error-After": "2"})) as gw:
        request_id = f"mid-{kind}"
        with gw.http().stream("POST", "/v1/chat/completions",
                              headers={"x-request-id": request_id},
                              json={"model": "chat", "messages": USER, "stream": True}) as answer:
            text = answer.read().decode()
        assert answer.status_code == 200
        frames = [json.loads(line[6:]) for line in text.splitlines()
                  if line.startswith("data: {")]
        assert "error" in frames[-1]
        assert any(f.get("choices") for f in frames[:-1])
        _assert_scrubbed(text, secret, gw, request_id)


def test_mid_stream_error_through_the_sdk(run_gateway: GatewayFactory, simulator: str) -> None:
    """The openai SDK's exception for the frame carries no key either."""
    secret = "sk-sdk-midstream-0123456789"
    with run_gateway(_echoing(simulator, "openai", secret, {"X-Sim-Error-After": "1"})) as gw:
        with pytest.raises(openai.APIError) as raised:
            list(gw.client().chat.completions.create(model="chat", messages=USER, stream=True))
        assert secret not in str(raised.value) and secret not in repr(raised.value.body)


# ---- redirects (item 8) ---------------------------------------------------------------------


def test_an_echoed_cookie_or_password_header_is_scrubbed(run_gateway: GatewayFactory,
                                                         simulator: str) -> None:
    """An upstream error echoing the value of a configured ``Cookie`` or ``X-Password`` header
    (not only ``Authorization``-like names) reaches neither the client nor the record."""
    cookie, password = "sid=cookie-SECRET-4242", "pw-SECRET-9191"
    echo = json.dumps({"error": {"message": f"no session {cookie} for {password}",
                                 "type": "invalid_request_error", "param": password,
                                 "code": cookie}}).encode()
    with canned(json_answer(echo, 400)) as upstream:
        raw = sim_config(simulator, chat={"targets": [{"provider": "up", "model": "m"}]})
        raw["providers"]["up"] = {"type": "openai", "base_url": upstream.url + "/v1",
                                  "headers": {"Cookie": cookie, "X-Password": password}}
        with run_gateway(raw) as gw:
            answer = gw.http().post("/v1/chat/completions", headers={"x-request-id": "cookie"},
                                    json={"model": "chat", "messages": USER})
            assert answer.status_code == 400
            record = gw.sink.by_id("cookie")
            for text in (answer.text, record.error_message or ""):
                assert "SECRET" not in text and "[redacted]" in text


async def test_a_connection_error_never_shows_a_query_of_the_upstream_url() -> None:
    """The config refuses a query in a provider's URL; an upstream built with one otherwise
    still names itself in errors without it (nor a ``user:password@``)."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with new_session() as session:
        upstream = Upstream(session, base_url=f"http://u:pw-SECRET@127.0.0.1:{port}/v1?k=SECRET",
                            headers={}, timeout_s=5, connect_timeout_s=5)
        with pytest.raises(errors.UpstreamConnectError) as caught:
            await upstream.post_json("/chat/completions", {})
    assert str(caught.value) == f"cannot connect to upstream http://127.0.0.1:{port}/v1"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_redirect_is_an_error_and_never_followed(
        run_gateway: GatewayFactory, simulator: str, status: int, stream: bool) -> None:
    """A 3xx from the upstream is a 502 naming no Location; the place it points to is never
    called (the prompt and the credentials would go with it)."""
    with canned(chat_answer()) as elsewhere:
        location = elsewhere.url + "/v1/chat/completions?sig=location-secret-42"
        with canned(redirect_answer(status, location)) as upstream:
            raw = sim_config(simulator,
                             chat={"targets": [{"provider": "moved", "model": "gpt-4o-mini"}]})
            raw["providers"]["moved"] = {"type": "openai", "base_url": upstream.url + "/v1",
                                         "api_key": "sk-redirected-0123456789"}
            with run_gateway(raw) as gw:
                request_id = f"redirect-{status}-{stream}"
                answer = gw.http().post(
                    "/v1/chat/completions", headers={"x-request-id": request_id},
                    json={"model": "chat", "messages": USER, "stream": stream})
                assert answer.status_code == 502
                error = answer.json()["error"]
                assert error["type"] == "upstream_error"
                assert "redirect" in error["message"]
                assert "location-secret-42" not in answer.text
                assert elsewhere.url not in answer.text
                assert len(upstream.requests) == 1
                assert elsewhere.requests == []
                record = gw.sink.by_id(request_id)
                assert (record.status, record.http_status) == ("error", 502)
                assert "location-secret-42" not in (record.error_message or "")


def _moved(kind: str, url: str) -> tuple[dict[str, Any], str]:
    """A provider of ``kind`` whose base URL is ``url``, and a model of it to ask for."""
    aws = {"access_key_id": "AKIAREDIRECTTEST0000",
           "secret_access_key": "redirect-test-secret-0123456789"}
    return {
        "bedrock": ({"type": "bedrock", "region": "us-east-1", "base_url": url, **aws},
                    "anthropic.claude-3-haiku-20240307-v1:0"),
        "sagemaker": ({"type": "sagemaker", "region": "eu-west-1", "base_url": url, **aws},
                      "llama-vllm-endpoint"),
        "gemini": ({"type": "gemini", "api_key": "AIza-redirect-0123456789", "base_url": url},
                   "gemini-2.0-flash"),
        "cohere": ({"type": "cohere", "api_key": "co-redirect-0123456789", "base_url": url},
                   "command-r-08-2024"),
        "ai21": ({"type": "ai21", "api_key": "ai21-redirect-0123456789", "base_url": url},
                 "jamba-mini"),
        "huggingface": ({"type": "huggingface", "api_key": "hf_redirect0123456789",
                         "base_url": url}, "meta-llama/Llama-3.1-8B-Instruct"),
    }[kind]


@pytest.mark.parametrize("kind", ["bedrock", "sagemaker", "gemini", "cohere", "ai21",
                                  "huggingface"])
@pytest.mark.parametrize("stream", [False, True])
def test_no_provider_type_follows_a_redirect(run_gateway: GatewayFactory, simulator: str,
                                             kind: str, stream: bool) -> None:
    """Provider types with HTTP paths of their own (AWS's signed client, Google's, Cohere's,
    AI21's, Hugging Face's) answer a 3xx with a 502 too, and never call where it points."""
    with canned(chat_answer()) as elsewhere, \
            canned(redirect_answer(307, elsewhere.url + "/moved?sig=location-secret-42")) \
            as upstream:
        provider, model = _moved(kind, upstream.url)
        raw = sim_config(simulator, chat={"targets": [{"provider": "moved", "model": model}]})
        raw["providers"]["moved"] = provider
        with run_gateway(raw) as gw:
            request_id = f"redirect-{kind}-{stream}"
            answer = gw.http().post(
                "/v1/chat/completions", headers={"x-request-id": request_id},
                json={"model": "chat", "messages": USER, "stream": stream})
            assert answer.status_code == 502, answer.text
            assert "redirect" in answer.json()["error"]["message"]
            assert "location-secret-42" not in answer.text
            assert len(upstream.requests) == 1
            assert elsewhere.requests == []
            assert gw.sink.by_id(request_id).http_status == 502


def test_redirect_through_the_sdk(run_gateway: GatewayFactory, simulator: str) -> None:
    with canned(chat_answer()) as elsewhere, \
            canned(redirect_answer(307, elsewhere.url + "/v1/chat/completions")) as upstream:
        raw = sim_config(simulator, chat={"targets": [{"provider": "moved", "model": "m"}]})
        raw["providers"]["moved"] = {"type": "openai", "base_url": upstream.url + "/v1"}
        with run_gateway(raw) as gw, pytest.raises(openai.APIStatusError) as raised:
            gw.client().chat.completions.create(model="chat", messages=USER)
        assert raised.value.status_code == 502
        assert elsewhere.requests == []


# ---- a cut stream's buffered bytes (item 14) ------------------------------------------------


def _sse_chunk(index: int) -> bytes:
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"content": f"piece{index} "},
                          "finish_reason": None}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def _cut_stream(n: int) -> bytes:
    """A chunked event stream of ``n`` chunks and half of another, then the connection closes
    without the terminating zero-length chunk: all of it in one write, so that the gateway's
    transport has the bytes buffered when it learns of the cut."""
    events = b"".join(_sse_chunk(i) for i in range(n)) + b'data: {"id": "c", "obj'
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            + f"{len(events):x}\r\n".encode() + events + b"\r\n")


@pytest.mark.parametrize("n", [1, 3, 12])
def test_cut_stream_relays_every_chunk_received(run_gateway: GatewayFactory, simulator: str,
                                                n: int) -> None:
    """Every complete event that arrived before the cut reaches the client, then the error;
    the half event is dropped."""
    with canned(_cut_stream(n)) as upstream:
        raw = sim_config(simulator, chat={"targets": [{"provider": "cut", "model": "m"}]})
        raw["providers"]["cut"] = {"type": "openai", "base_url": upstream.url + "/v1"}
        with run_gateway(raw) as gw, gw.http().stream(
                "POST", "/v1/chat/completions", headers={"x-request-id": f"cut-{n}"},
                json={"model": "chat", "messages": USER, "stream": True}) as answer:
            text = answer.read().decode()
            frames = [json.loads(line[6:]) for line in text.splitlines()
                      if line.startswith("data: {")]
            contents = [f["choices"][0]["delta"]["content"] for f in frames if f.get("choices")]
            assert contents == [f"piece{i} " for i in range(n)]
            assert "error" in frames[-1]
            assert gw.sink.by_id(f"cut-{n}").status == "error"


async def test_buffered_bytes_of_a_failed_stream_are_readable() -> None:
    """aiohttp raises a stream's stored error before the lines it buffered; ``_buffered`` reads
    them from its private buffer. This fails loudly if aiohttp changes that buffer."""
    loop = asyncio.get_running_loop()
    reader = aiohttp.StreamReader(BaseProtocol(loop), 2**16, loop=loop)
    reader.feed_data(b"data: one\n\ndata: tw")
    reader.feed_data(b"o\n\ndata: thr")
    assert await reader.readline() == b"data: one\n"  # part of the first buffer is read
    reader.set_exception(aiohttp.ClientPayloadError("cut"))
    with pytest.raises(aiohttp.ClientPayloadError):
        await reader.readline()
    parser = SSEParser()
    assert _buffered(reader) == b"\ndata: two\n\ndata: thr"
    assert [e.data for e in parser.lines(_buffered(reader))] == ["two"]
    assert parser.end() is None  # the partial line never counts


def test_sse_parser_events() -> None:
    parser = SSEParser()
    found = parser.lines(b"event: a\ndata: 1\ndata: 2\n\n: comment\ndata: 3\r\n\r\n")
    assert [(e.event, e.data) for e in found] == [("a", "1\n2"), (None, "3")]

