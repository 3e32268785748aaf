"""``type: azure_openai`` on an api-version before 2024-09-01: a client's
``max_completion_tokens`` goes as ``max_tokens``, the only limit it knows, through a running
gateway against the simulator (which, as Azure, refuses the newer field there)."""

# The gateway fixture lives in tests/api/conftest.py, outside this directory: imported here so
# pytest finds it, and then named by each test's parameter (which ruff reads as a redefinition).
# ruff: noqa: F811

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.conftest import (  # noqa: F401 - run_gateway is a fixture, used by name
    GatewayFactory,
    run_gateway,
)

USER: Any = [{"role": "user", "content": "Tell me about tides"}]


def config(simulator: str, api_version: str) -> dict[str, Any]:
    return {"providers": {"az": {"type": "azure_openai", "endpoint": simulator,
                                 "api_key": "azure-key", "api_version": api_version}},
            "models": {"gpt": {"targets": [{"provider": "az", "model": "gpt4o-prod"}]}},
            "drift": {"embedding": {"sample_rate": 0}}, "retries": {"attempts": 0}}


def last_body(simulator: str) -> dict[str, Any]:
    (record,) = httpx.get(f"{simulator}/_sim/requests", params={"limit": "1"}).json()
    body: dict[str, Any] = record["body"]
    return body


@pytest.mark.parametrize(("given", "sent"), [
    ({"max_completion_tokens": 5}, {"max_tokens": 5}),
    ({"max_completion_tokens": 5, "max_tokens": 7}, {"max_tokens": 5}),
    ({"max_completion_tokens": 9, "max_tokens": 4}, {"max_tokens": 4})])
def test_old_version_gets_max_tokens(run_gateway: GatewayFactory, simulator: str,
                                     given: dict[str, int], sent: dict[str, int]) -> None:
    """On 2024-06-01 the client's limit (the smaller of two) is sent as ``max_tokens``, and
    answered, streamed or not."""
    with run_gateway(config(simulator, "2024-06-01")) as gw:
        http = gw.http()
        reply = http.post("/v1/chat/completions", json={"model": "gpt", "messages": USER,
                                                        **given})
        assert reply.json()["choices"][0]["finish_reason"] == "length"
        body = last_body(simulator)
        assert {k: body.get(k) for k in ("max_tokens", "max_completion_tokens")} == {
            "max_completion_tokens": None, **sent}
        streamed = http.post("/v1/chat/completions", json={
            "model": "gpt", "messages": USER, "stream": True, **given})
        assert streamed.status_code == 200 and "[DONE]" in streamed.text
        assert "max_completion_tokens" not in last_body(simulator)


def test_new_version_keeps_max_completion_tokens(run_gateway: GatewayFactory,
                                                 simulator: str) -> None:
    """On 2024-10-21 ``max_completion_tokens`` is forwarded as sent."""
    with run_gateway(config(simulator, "2024-10-21")) as gw:
        gw.client().chat.completions.create(model="gpt", messages=USER, max_completion_tokens=5)
    assert last_body(simulator)["max_completion_tokens"] == 5


def test_simulator_refuses_new_fields_on_old_versions(simulator: str) -> None:
    """As Azure, the simulator answers 400 for ``max_completion_tokens`` before 2024-09-01."""
    reply = httpx.post(f"{simulator}/openai/deployments/d/chat/completions",
                       params={"api-version": "2024-08-01-preview"},
                       headers={"api-key": "k"},
                       json={"messages": USER, "max_completion_tokens": 5})
    assert reply.status_code == 400
    assert "max_completion_tokens" in reply.json()["error"]["message"]
