"""An OpenAI-type stream that sends its role chunk before its model's first token (the
simulator's ``X-Sim-Role-Early``): the first-chunk timeout, the deadline and the call's TTFT
count to the first token, and the client gets the same chunks in the same order."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.api.conftest import GatewayFactory, RunningGateway, sim_config

KINDS = ["openai", "vllm", "azure_openai"]
"""The provider types that pass an OpenAI-compatible server's chunks through."""

CALL = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": True}


def _provider(kind: str, simulator: str, headers: dict[str, str]) -> dict[str, Any]:
    if kind == "azure_openai":
        return {"type": "azure_openai", "endpoint": simulator, "api_key": "az-0123456789",
                "headers": headers}
    return {"type": kind, "base_url": simulator + "/v1", "api_key": "sk-up-0123456789",
            "headers": headers}


def _role_early(kind: str, simulator: str, ttft_ms: int) -> dict[str, Any]:
    """``kind`` on the simulator: its role chunk at once, its first token ``ttft_ms`` on."""
    return {**_provider(kind, simulator, {"X-Sim-Role-Early": "1",
                                          "X-Sim-TTFT-Ms": str(ttft_ms)}), "timeout_s": 60}


def _frames(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


def _streamed(gw: RunningGateway, request_id: str, **headers: str) -> tuple[int, str]:
    with gw.http().stream("POST", "/v1/chat/completions", json=CALL,
                          headers={"x-request-id": request_id, **headers}) as answer:
        return answer.status_code, answer.read().decode()


@pytest.mark.parametrize("kind", KINDS)
def test_a_role_chunk_before_the_first_token_does_not_stop_the_fallback(
        run_gateway: GatewayFactory, simulator: str, kind: str) -> None:
    """A target whose role chunk comes at once and whose first token comes long after its
    ``first_chunk_timeout_s`` is given up for the next target, which answers the stream (the
    role chunk was not taken for the first token, which would have committed the call)."""
    raw = sim_config(simulator, chat={"targets": [
        {"provider": "up", "model": "gpt-4o-mini", "first_chunk_timeout_s": 0.5},
        {"provider": "sim", "model": "gpt-4o-mini"}]})
    raw["providers"]["up"] = _role_early(kind, simulator, 30_000)
    with run_gateway(raw) as gw:
        status, text = _streamed(gw, f"role-fallback-{kind}")
        assert status == 200
        frames = _frames(text)
        assert frames[0]["choices"][0]["delta"]["role"] == "assistant"
        assert "".join(f["choices"][0]["delta"].get("content") or ""
                       for f in frames if f.get("choices"))
        assert text.rstrip().endswith("data: [DONE]")
        record = gw.sink.emitted(f"role-fallback-{kind}")
        assert (record.status, record.provider) == ("ok", "sim")
        assert [(a.provider, a.status) for a in record.attempts] == [("up", 504), ("sim", 200)]


@pytest.mark.parametrize("kind", KINDS)
def test_a_role_chunk_before_the_first_token_does_not_stop_the_deadline(
        run_gateway: GatewayFactory, simulator: str, kind: str) -> None:
    """A call's only target sends its role chunk at once and its first token long after the
    client's deadline: the call fails with ``deadline_exceeded`` before anything reaches the
    client, as for a target that sends nothing."""
    raw = sim_config(simulator, chat={"targets": [{"provider": "up", "model": "gpt-4o-mini"}]})
    raw["providers"]["up"] = _role_early(kind, simulator, 30_000)
    with run_gateway(raw) as gw:
        status, text = _streamed(gw, f"role-deadline-{kind}", **{"x-switchboard-deadline-s": "1"})
        assert status == 504, text
        assert json.loads(text)["error"]["code"] == "deadline_exceeded"
        record = gw.sink.emitted(f"role-deadline-{kind}")
        assert (record.status, record.http_status, record.error_type) == ("error", 504,
                                                                          "timeout")
        assert [(a.provider, a.status) for a in record.attempts] == [("up", 504)]


def _comparable(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The frames without what differs from one answer to the next (``id``, ``created``)."""
    return [{k: v for k, v in f.items() if k not in ("id", "created")} for f in frames]


@pytest.mark.parametrize("kind", KINDS)
def test_the_ttft_of_a_stream_with_an_early_role_chunk_is_its_first_token(
        run_gateway: GatewayFactory, simulator: str, kind: str) -> None:
    """The call's TTFT is the time to the first token, not to the role chunk before it; the
    client gets the same chunks, role chunk first, as from a server that sends the role chunk
    with the first token."""
    raw = sim_config(simulator, chat={"targets": [{"provider": "up", "model": "gpt-4o-mini"}]},
                     plain={"targets": [{"provider": "plain", "model": "gpt-4o-mini"}]})
    raw["providers"]["up"] = _role_early(kind, simulator, 1500)
    raw["providers"]["plain"] = _provider(kind, simulator, {})
    with run_gateway(raw) as gw:
        status, text = _streamed(gw, f"role-ttft-{kind}")
        assert status == 200
        with gw.http().stream("POST", "/v1/chat/completions", json={**CALL, "model": "plain"},
                              headers={"x-request-id": f"role-plain-{kind}"}) as answer:
            plain = answer.read().decode()
        frames = _frames(text)
        assert frames[0]["choices"][0]["delta"] == {"role": "assistant", "content": "",
                                                    "refusal": None}
        assert _comparable(frames) == _comparable(_frames(plain))
        record = gw.sink.emitted(f"role-ttft-{kind}")
        assert record.status == "ok"
        # The first token came 1500 ms after the upstream got the request, so after the call
        # began; the role chunk came at once.
        assert record.ttft_ms is not None and record.ttft_ms >= 1500
