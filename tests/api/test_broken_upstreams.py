"""Routing around an upstream that broke before anything reached the client (a 200 then a
dropped connection, a stream closed before its first chunk, a 200 that is not JSON), the
latency strategy's view of a target that keeps failing, and the first-chunk timeout of a call
with no other target left, through a running gateway and the simulator's fault knobs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from app.simulator.asgi import SSE_HEADERS, Receive, Scope, Send
from app.simulator.asgi import read_body as read_asgi_body
from tests.api.conftest import GatewayFactory, sim_config
from tests.hardening_upstreams import canned, json_answer, scripted, sse_answer
from tests.servers import serve

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**CHAT, "stream": True}
LONG = {"model": "chat", "stream": True, "messages": [
    {"role": "user", "content": "a prompt well past the two tokens of the short window"}]}


def first_broken(simulator: str, headers: dict[str, str], *, base_url: str | None = None,
                 attempts: int = 2, **target: Any) -> dict[str, Any]:
    """Model ``chat``: target ``bad`` (the simulator with ``headers``, or ``base_url``), then
    the healthy ``sim``; ``attempts`` retries of a target, backing off 10 ms."""
    raw = sim_config(simulator, chat={"targets": [
        {"provider": "bad", "model": "gpt-4o-mini", **target},
        {"provider": "sim", "model": "gpt-4o-mini"}]})
    raw["providers"]["bad"] = {"type": "openai", "base_url": base_url or simulator + "/v1",
                               "api_key": "sk-bad", "headers": headers}
    raw["retries"] = {"attempts": attempts, "backoff_s": 0.01, "max_backoff_s": 0.01}
    raw["breaker"] = {"enabled": False}
    return raw


def attempts_of(record: Any) -> list[tuple[str, int]]:
    return [(a.provider, a.status) for a in record.attempts]


@pytest.fixture
def headers_then_close() -> Iterator[str]:
    """An upstream that answers a stream's 200 and its headers, then ends it with no data (a
    server that died during prefill, behind a proxy that closes the response cleanly)."""
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await read_asgi_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        await send({"type": "http.response.body", "body": b""})

    with serve(app) as url:
        yield url + "/v1"


def test_a_stream_cut_before_its_first_chunk_is_retried_then_falls_back(
        run_gateway: GatewayFactory, simulator: str) -> None:
    """A stream whose connection drops after its 200 and before any data (a vLLM pod killed
    during prefill) is a broken connection: retried on its target, then the next target
    answers; the client sees only the answer."""
    with run_gateway(first_broken(simulator, {"X-Sim-Cut-After": "0"})) as gateway:
        chunks = list(gateway.client().chat.completions.create(stream=True, **CHAT))  # type: ignore[call-overload]
        assert chunks[-1].choices[0].finish_reason == "stop"
        record = gateway.sink.records[-1]
        assert (record.status, record.provider) == ("ok", "sim")
        assert attempts_of(record) == [("bad", 502)] * 3 + [("sim", 200)]


def test_a_stream_closed_before_any_data_is_retried_then_falls_back(
        run_gateway: GatewayFactory, simulator: str, headers_then_close: str) -> None:
    """A stream that sends its 200 and headers, then closes with no body at all, is a broken
    connection too, not an answer."""
    raw = first_broken(simulator, {}, base_url=headers_then_close, attempts=1)
    with run_gateway(raw) as gateway:
        chunks = list(gateway.client().chat.completions.create(stream=True, **CHAT))  # type: ignore[call-overload]
        assert chunks[-1].choices[0].finish_reason == "stop"
        assert attempts_of(gateway.sink.records[-1]) == [("bad", 502), ("bad", 502),
                                                         ("sim", 200)]


STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
"""A stream's 200 without a length or chunked encoding: its body ends when the connection
closes."""
CHUNK = (b'{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":'
         b'[{"index":0,"delta":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}')


@pytest.mark.parametrize("sent", [b": ping\n\n", b"data: " + CHUNK[:40]],
                         ids=["comment-only", "first-line-cut"])
def test_a_close_ended_stream_cut_before_its_first_event_is_retried(
        run_gateway: GatewayFactory, simulator: str, sent: bytes) -> None:
    """A stream whose body ends at the connection's close, closed after only a keep-alive
    comment or midway through its first ``data:`` line, is a broken connection as a cut
    chunked one is: its only target is asked again, and answers."""
    with scripted(STREAM_HEAD + sent, sse_answer(CHUNK, b"[DONE]")) as upstream:
        raw = first_broken(simulator, {}, base_url=upstream.url, attempts=1)
        raw["models"]["chat"]["targets"].pop()
        with run_gateway(raw) as gateway:
            chunks = list(gateway.client().chat.completions.create(stream=True, **CHAT))  # type: ignore[call-overload]
            assert chunks[-1].choices[0].finish_reason == "stop"
            assert attempts_of(gateway.sink.records[-1]) == [("bad", 502), ("bad", 200)]


def test_a_unary_answer_cut_short_of_its_length_is_retried_then_falls_back(
        run_gateway: GatewayFactory, simulator: str) -> None:
    """A 200 whose body stops short of its Content-Length (the connection dropped) is retried
    on its target, then the next one answers."""
    with run_gateway(first_broken(simulator, {"X-Sim-Cut-Body": "10"})) as gateway:
        answer = gateway.http().post("/v1/chat/completions", json=CHAT)
        assert answer.status_code == 200 and answer.headers["x-switchboard-provider"] == "sim"
        assert attempts_of(gateway.sink.records[-1]) == [("bad", 502)] * 3 + [("sim", 200)]


def test_a_200_that_is_not_json_falls_back_without_a_retry(run_gateway: GatewayFactory,
                                                           simulator: str) -> None:
    """A whole 200 the gateway cannot use (an HTML page) is the target's failure: the next
    target answers, and the same one is not asked again (it would most likely answer the
    same); with no next target, it is the 502 it always was."""
    raw = first_broken(simulator, {"X-Sim-Garbage": "1"})
    with run_gateway(raw) as gateway:
        answer = gateway.http().post("/v1/chat/completions", json=CHAT)
        assert answer.status_code == 200 and answer.headers["x-switchboard-provider"] == "sim"
        assert attempts_of(gateway.sink.records[-1]) == [("bad", 502), ("sim", 200)]
    raw["models"]["chat"]["targets"].pop()
    with run_gateway(raw) as gateway:
        alone = gateway.http().post("/v1/chat/completions", json=CHAT)
        assert alone.status_code == 502 and "invalid JSON" in alone.json()["error"]["message"]
        assert attempts_of(gateway.sink.records[-1]) == [("bad", 502)]


def test_a_stream_cut_after_its_first_chunk_is_never_retried(run_gateway: GatewayFactory,
                                                              simulator: str) -> None:
    """Once chunks went to the client a cut stream ends with an error frame: one attempt, no
    retry and no fallback."""
    with run_gateway(first_broken(simulator, {"X-Sim-Cut-After": "2"})) as gateway:
        with gateway.http().stream("POST", "/v1/chat/completions", json=STREAM) as answer:
            text = answer.read().decode()
        assert answer.status_code == 200 and '"error"' in text
        assert attempts_of(gateway.sink.records[-1]) == [("bad", 502)]


def test_latency_stops_leading_with_a_target_that_only_fails(run_gateway: GatewayFactory,
                                                            simulator: str) -> None:
    """``strategy: latency`` puts a target whose attempts all failed (a spent quota's 429s,
    which never open a breaker) last once it has failed, instead of first on every call as
    an unmeasured target."""
    raw = first_broken(simulator, {"X-Return-Error": "429"}, attempts=0)
    raw["models"]["chat"]["strategy"] = "latency"
    with run_gateway(raw) as gateway:
        http = gateway.http()
        for _ in range(21):
            assert http.post("/v1/chat/completions", json=CHAT).status_code == 200
        firsts = [r.attempts[0].provider for r in gateway.sink.records]
        assert firsts[0] == "bad"  # unknown both: the config's order
        # After it: only the strategy's 5% exploration may try it first (20 calls: 0.5
        # expected; more than 5 has odds of about one in a million).
        assert firsts[1:].count("bad") <= 5


def slow_then_short_window(simulator: str) -> dict[str, Any]:
    """``chat``: ``slow`` (first token after 1 s, a first-chunk timeout of 0.2 s), then ``sim``
    whose context window only a short prompt fits."""
    raw = first_broken(simulator, {"X-Sim-TTFT-Ms": "1000"}, attempts=0,
                       first_chunk_timeout_s=0.2)
    raw["models"]["chat"]["targets"][1]["context_window"] = 2
    return raw


def test_the_first_chunk_timeout_waits_when_no_other_target_is_left(
        run_gateway: GatewayFactory, simulator: str) -> None:
    """A long prompt skips the short-window target, so the slow one is the last this call can
    try: it waits for its slow first token instead of failing with a 504."""
    with run_gateway(slow_then_short_window(simulator)) as gateway:
        http = gateway.http()
        with http.stream("POST", "/v1/chat/completions", json=LONG) as answer:
            text = answer.read().decode()
        assert answer.status_code == 200 and text.rstrip().endswith("data: [DONE]")
        assert attempts_of(gateway.sink.records[-1]) == [("bad", 200)]


def test_the_last_target_left_after_a_fallback_waits_for_its_first_chunk(
        run_gateway: GatewayFactory, simulator: str) -> None:
    """The slow target last in the order, after a failed one, waits for its first token: there
    is nothing after it to fall back to."""
    raw = slow_then_short_window(simulator)
    raw["models"]["chat"]["targets"] = [
        {"provider": "broken", "model": "gpt-4o-mini"},
        {"provider": "bad", "model": "gpt-4o-mini", "first_chunk_timeout_s": 0.2}]
    with run_gateway(raw) as gateway:
        answer = gateway.http().post("/v1/chat/completions", json=STREAM)
        assert answer.status_code == 200 and answer.text.rstrip().endswith("data: [DONE]")
        assert attempts_of(gateway.sink.records[-1]) == [("broken", 503), ("bad", 200)]


WORDY = {"model": "chat", "messages": [{"role": "user", "content": "word " * 12000}]}
"""A prompt past the simulator's context (8,192 tokens): its 400 is the request's fault."""


def test_latency_keeps_a_target_the_client_sent_bad_requests_to(run_gateway: GatewayFactory,
                                                                simulator: str) -> None:
    """Under ``strategy: latency``, a client's requests that the fast target refuses as too
    long (400; the slow one's context window is too short for them to go there) do not count
    against it: the calls after each go to it first still, not to the slow one."""
    raw = first_broken(simulator, {}, attempts=0)
    raw["providers"]["slow"] = {**raw["providers"]["sim"],
                                "headers": {"X-Sim-TTFT-Ms": "150"}}
    raw["models"]["chat"] = {"strategy": "latency", "targets": [
        {"provider": "bad", "model": "gpt-4o-mini"},
        {"provider": "slow", "model": "gpt-4o-mini", "context_window": 1000}]}
    with run_gateway(raw) as gateway:
        http = gateway.http()
        for _ in range(2):  # both measured: the fast one leads from here on
            assert http.post("/v1/chat/completions", json=CHAT).status_code == 200
        firsts = []
        for _ in range(16):
            assert http.post("/v1/chat/completions", json=WORDY).status_code == 400
            assert http.post("/v1/chat/completions", json=CHAT).status_code == 200
            firsts.append(gateway.sink.records[-1].attempts[0].provider)
        # Only the 5% exploration (half of it picking the slow one) may lead with it: 0.4
        # expected in 16; more than 5 has odds of about one in a million.
        assert firsts.count("slow") <= 5, firsts


@pytest.mark.parametrize("stream", [False, True], ids=["answer", "stream"])
def test_an_error_answered_with_200_falls_back(run_gateway: GatewayFactory, simulator: str,
                                               stream: bool) -> None:
    """An OpenAI-compatible upstream answering 200 with an ``error`` object (or opening its
    stream with an error frame) is an answer the gateway cannot use: the next target serves
    the call, as for any other (the breaker counted it, routing did not fall back)."""
    error = b'{"error": {"message": "model overloaded", "type": "server_error"}}'
    answer = sse_answer(error) if stream else json_answer(error)
    with canned(answer) as upstream:
        raw = first_broken(simulator, {}, base_url=upstream.url, attempts=0)
        with run_gateway(raw) as gateway:
            body = {**CHAT, "stream": stream}
            with gateway.http().stream("POST", "/v1/chat/completions", json=body) as reply:
                text = reply.read().decode()
            assert reply.status_code == 200, text
            assert attempts_of(gateway.sink.records[-1]) == [("bad", 502), ("sim", 200)]
