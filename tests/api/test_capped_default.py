"""A call that gives no token limit on a model with a ``max_tokens_cap`` is sent the cap, so
the upstream never generates past it, on every provider type, OpenAI's included
(``app.routing.table``); on OpenAI chat it goes as ``max_completion_tokens``, which OpenAI's
reasoning models take where they refuse ``max_tokens``. Through a running gateway."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.conftest import GatewayFactory, sim_config

HELLO = [{"role": "user", "content": "Tell me a long story about the capped switchboard"}]


def sent_to(simulator: str, marker: str) -> dict[str, Any]:
    """The body of the newest request the simulator received with ``marker`` in its messages."""
    records = httpx.get(f"{simulator}/_sim/requests", params={"limit": 50}).json()
    return next(r["body"] for r in reversed(records) if marker in str(r.get("body")))


def test_no_limit_is_sent_the_cap(run_gateway: GatewayFactory, simulator: str) -> None:
    """OpenAI chat gets the cap as ``max_completion_tokens`` (streamed or not), completions as
    ``max_tokens``; the mock, which has no upstream, cuts its answer there too."""
    config = sim_config(
        simulator,
        capped={"targets": [{"provider": "sim", "model": "gpt-4o-mini"}], "max_tokens_cap": 7},
        mock={"targets": [{"provider": "offline", "model": "mock-chat"}], "max_tokens_cap": 3})
    config["providers"]["offline"] = {"type": "mock"}
    with run_gateway(config) as gateway:
        client = gateway.http()
        for stream in (False, True):
            marker = f"cap-{stream}"
            messages = [{"role": "user", "content": f"{HELLO[0]['content']} {marker}"}]
            reply = client.post("/v1/chat/completions", json={
                "model": "capped", "messages": messages, "stream": stream})
            assert reply.status_code == 200, reply.text
            sent = sent_to(simulator, marker)
            assert sent["max_completion_tokens"] == 7 and "max_tokens" not in sent
        reply = client.post("/v1/completions", json={"model": "capped", "prompt": "cap-prompt"})
        assert reply.status_code == 200, reply.text
        sent = sent_to(simulator, "cap-prompt")
        assert sent["max_tokens"] == 7 and "max_completion_tokens" not in sent
        answer = client.post("/v1/chat/completions", json={"model": "mock", "messages": HELLO})
        assert answer.status_code == 200, answer.text
        assert answer.json()["usage"]["completion_tokens"] == 3
        assert answer.json()["choices"][0]["finish_reason"] == "length"
        completion = client.post("/v1/completions", json={"model": "mock", "prompt": "a b c d e"})
        assert completion.json()["usage"]["completion_tokens"] == 3
