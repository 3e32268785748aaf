"""A provider's own refusal of a field (raised before anything is sent) carries OpenAI's
``invalid_value`` code when it has no more precise one, as the gateway's own checks do (README
"What clients get"), instead of ``code: null``."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.conftest import MASTER_KEY, GatewayFactory, run_gateway  # noqa: F401


def raw(simulator: str) -> dict[str, Any]:
    return {
        "providers": {"mock": {"type": "mock"},
                      "co": {"type": "cohere", "base_url": simulator, "api_key": "co-key-0123"},
                      "g": {"type": "gemini", "base_url": f"{simulator}/gemini/v1beta",
                            "api_key": "g-key-0123"}},
        "models": {"mock-embed": {"targets": [{"provider": "mock", "model": "mock-embed"}]},
                   "coh": {"targets": [{"provider": "co", "model": "embed-v4.0"}]},
                   "gem": {"targets": [{"provider": "g", "model": "gemini-embedding-001"}]}},
        "drift": {"embedding": {"sample_rate": 0}},
        "retries": {"attempts": 0},
    }


@pytest.mark.parametrize(("body", "param", "words"), [
    ({"model": "coh", "input": [1, 2, 3]}, "input", "Cohere embeds text only"),
    ({"model": "coh", "input": "a", "input_type": "bogus"}, "input_type", "input_type"),
    ({"model": "gem", "input": [1, 2, 3]}, "input", "Google's embedding models embed text only"),
    ({"model": "mock-embed", "input": "a", "dimensions": 8193}, "dimensions", "dimensions"),
], ids=["cohere-token-ids", "cohere-input-type", "gemini-token-ids", "mock-dimensions"])
def test_provider_refusals_carry_invalid_value(run_gateway: GatewayFactory,  # noqa: F811
                                               simulator: str,
                                               body: dict[str, Any], param: str,
                                               words: str) -> None:
    with run_gateway(raw(simulator)) as gw:
        reply = httpx.post(f"{gw.url}/v1/embeddings", json=body, timeout=30,
                           headers={"Authorization": f"Bearer {MASTER_KEY}"})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert (error["type"], error["param"], error["code"]) == \
        ("invalid_request_error", param, "invalid_value")
    assert words in error["message"]
