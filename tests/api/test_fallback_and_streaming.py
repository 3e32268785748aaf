"""Fallback before the first byte and never after (a refused credential included); keep-alives;
cancellation on disconnect."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.api.conftest import MASTER_KEY, GatewayFactory, sim_config

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


def _with_provider(simulator: str, name: str, headers: dict[str, str],
                   **extra: Any) -> dict[str, Any]:
    raw = sim_config(simulator, chat={"targets": [{"provider": name, "model": "first"},
                                                  {"provider": "sim", "model": "second"}]})
    raw["providers"][name] = {"type": "openai", "base_url": simulator + "/v1", "api_key": "k",
                              "headers": headers, **extra}
    return raw


@pytest.mark.parametrize("headers", [{"X-Return-Error": "503"}, {"X-Return-Error": "429"},
                                     {"X-Sim-Hang": "1"}])
def test_retryable_failure_falls_back_to_next_target(run_gateway: GatewayFactory, simulator: str,
                                                     headers: dict[str, str]) -> None:
    """A 5xx, 429 or timeout from the first target is answered by the second, all recorded."""
    with run_gateway(_with_provider(simulator, "flaky", headers, timeout_s=0.5)) as gw:
        raw = gw.client().chat.completions.with_raw_response.create(
            model="chat", messages=USER, extra_headers={"x-request-id": "fb-1"})
        assert raw.headers["x-switchboard-provider"] == "sim"
        assert raw.headers["x-switchboard-target-model"] == "second"
        record = gw.sink.by_id("fb-1")
        assert [(a.provider, a.status) for a in record.attempts][1] == ("sim", 200)
        assert record.attempts[0].provider == "flaky" and record.attempts[0].status >= 429


def test_non_retryable_failure_does_not_fall_back(run_gateway: GatewayFactory,
                                                  simulator: str) -> None:
    """A 400 from the first target is the client's problem: no second attempt."""
    with run_gateway(_with_provider(simulator, "strict", {"X-Return-Error": "400"})) as gw:
        with pytest.raises(openai.BadRequestError):
            gw.client().chat.completions.create(
                model="chat", messages=USER, extra_headers={"x-request-id": "fb-2"})
        assert len(gw.sink.by_id("fb-2").attempts) == 1


REFUSING: dict[str, dict[str, Any]] = {
    "cohere_401": {"type": "cohere", "api_key": "co-key-0123456789",
                   "headers": {"X-Return-Error": "401"}},
    "openai_403": {"type": "openai", "api_key": "sk-refused-0123456789",
                   "headers": {"X-Return-Error": "403"}},
    "gemini_bad_key": {"type": "gemini", "api_key": "not-a-google-key-0123"},
}
"""Providers whose credential the simulator refuses, each in its own dialect (a Gemini key not
shaped like Google's is Google's 400 API_KEY_INVALID)."""


def _refusing(simulator: str, kind: str, *, second: str) -> dict[str, Any]:
    """Model ``chat``: ``bad`` (provider ``kind`` of ``REFUSING``) then provider ``second``,
    each retried up to twice on the same target when the failure allows it."""
    raw = sim_config(simulator, chat={"targets": [{"provider": "bad", "model": "first"},
                                                  {"provider": second, "model": "second"}]})
    entry = dict(REFUSING[kind])
    base = {"cohere": simulator, "openai": simulator + "/v1",
            "gemini": simulator + "/gemini/v1beta"}[entry["type"]]
    raw["providers"]["bad"] = {**entry, "base_url": base}
    raw["retries"] = {"attempts": 2, "backoff_s": 0.01}
    return raw


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("kind", sorted(REFUSING))
def test_a_refused_credential_falls_back_to_the_next_target(
        run_gateway: GatewayFactory, simulator: str, kind: str, stream: bool) -> None:
    """A target whose upstream refuses the gateway's credential is followed by the next target,
    tried once (never again with the same credential), its attempt recorded as a 502."""
    with run_gateway(_refusing(simulator, kind, second="sim")) as gw:
        answer = gw.http().post("/v1/chat/completions", headers={"x-request-id": kind},
                                json={"model": "chat", "messages": USER, "stream": stream})
        assert answer.status_code == 200
        assert answer.headers["x-switchboard-provider"] == "sim"
        assert '"finish_reason":"stop"' in answer.text
        record = gw.sink.by_id(kind)
    assert [(a.provider, a.status) for a in record.attempts] == [("bad", 502), ("sim", 200)]


def test_every_target_refusing_the_credential_is_a_502(run_gateway: GatewayFactory,
                                                       simulator: str) -> None:
    """When the last target refuses the credential too, the client gets its 502 saying so,
    and the record holds one attempt per target."""
    raw = _refusing(simulator, "openai_403", second="bad2")
    raw["providers"]["bad2"] = {**raw["providers"]["bad"], "api_key": "sk-other-0123456789"}
    with run_gateway(raw) as gw:
        with pytest.raises(openai.APIStatusError) as raised:
            gw.client().chat.completions.create(model="chat", messages=USER,
                                                extra_headers={"x-request-id": "all-bad"})
        record = gw.sink.by_id("all-bad")
    assert raised.value.status_code == 502
    assert "upstream refused the gateway's credentials" in raised.value.message
    assert [(a.provider, a.status) for a in record.attempts] == [("bad", 502), ("bad2", 502)]


def test_stream_falls_back_before_first_byte(run_gateway: GatewayFactory, simulator: str) -> None:
    """A stream whose first target fails before any chunk is served by the second target."""
    with run_gateway(_with_provider(simulator, "flaky", {"X-Return-Error": "503"})) as gw:
        raw = gw.client().chat.completions.with_raw_response.create(
            model="chat", messages=USER, stream=True)
        assert raw.headers["x-switchboard-provider"] == "sim"
        assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)


def test_stream_never_falls_back_after_first_byte(run_gateway: GatewayFactory,
                                                  simulator: str) -> None:
    """A stream cut after chunks reached the client ends in an error, not another target."""
    with run_gateway(_with_provider(simulator, "cut", {"X-Sim-Cut-After": "2"})) as gw:
        stream = gw.client().chat.completions.create(
            model="chat", messages=USER, stream=True, extra_headers={"x-request-id": "cut-1"})
        received = []
        with pytest.raises(openai.APIError):
            for chunk in stream:
                received.append(chunk)
        assert received, "chunks before the cut must have been relayed"
        record = gw.sink.by_id("cut-1")
        assert [a.provider for a in record.attempts] == ["cut"]
        assert record.status == "error"


def test_mid_stream_error_frame_reaches_the_client(run_gateway: GatewayFactory,
                                                   simulator: str) -> None:
    """An upstream error frame mid-stream becomes an error the SDK raises."""
    with run_gateway(_with_provider(simulator, "midfail", {"X-Sim-Error-After": "2"})) as gw:
        stream = gw.client().chat.completions.create(model="chat", messages=USER, stream=True)
        with pytest.raises(openai.APIError):
            list(stream)


def test_keepalive_comment_while_waiting_for_first_token(run_gateway: GatewayFactory,
                                                         simulator: str) -> None:
    """A slow first token gets SSE keep-alive comments before the data."""
    raw = _with_provider(simulator, "slow", {"X-Sim-TTFT-Ms": "800"})
    raw["models"]["chat"]["targets"] = raw["models"]["chat"]["targets"][:1]
    raw["streaming"] = {"keepalive_s": 0.2}
    with run_gateway(raw) as gw, httpx.stream(
            "POST", gw.url + "/v1/chat/completions", timeout=10,
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
            json={"model": "chat", "messages": USER, "stream": True}) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.status_code == 200
    assert lines[0] == ": keep-alive"
    assert any(line.startswith("data: {") for line in lines)
    assert lines[-1] == "data: [DONE]"


def test_client_disconnect_cancels_upstream(run_gateway: GatewayFactory, simulator: str) -> None:
    """Closing a stream mid-way closes the upstream request and records a cancelled call."""
    raw = _with_provider(simulator, "slowtok", {"X-Sim-TPOT-Ms": "50",
                                                "X-Sim-Completion-Tokens": "200"})
    raw["models"]["chat"]["targets"] = raw["models"]["chat"]["targets"][:1]
    with run_gateway(raw) as gw:
        assert gw.leave_a_stream(simulator, request_id="gone-1", body={
            "model": "chat", "messages": USER, "stream": True}) == 1
        record = gw.sink.by_id("gone-1")
        assert record.status == "cancelled"
