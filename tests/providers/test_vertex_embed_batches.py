"""Vertex text embeddings are cut into ``predict`` requests by Vertex's token limit as well as
its 250-text limit, through a running gateway against the simulator (which, as Vertex, refuses
a request over 20,000 input tokens)."""

# The gateway fixture lives in tests/api/conftest.py, outside this directory: imported here so
# pytest finds it, and then named by each test's parameter (which ruff reads as a redefinition).
# ruff: noqa: F811

from __future__ import annotations

import httpx

from app.simulator.vertex import MAX_INPUT_TOKENS
from app.usage import estimate_tokens
from tests.api.conftest import (  # noqa: F401 - run_gateway is a fixture, used by name
    GatewayFactory,
    run_gateway,
)
from tests.providers.test_gemini_gateway import (  # noqa: F401 - a fixture, used by name
    config,
    service_account_key,
)


def test_250_long_texts_go_in_requests_under_the_token_limit(
        run_gateway: GatewayFactory, simulator: str, service_account_key: str) -> None:
    """250 chunks of ~120 words (3x Vertex's 20,000 tokens) are embedded, in order, in
    several ``predict`` requests each under the limit."""
    raw = config(simulator, "vertex", service_account_key)
    raw["models"]["embed"]["targets"][0]["model"] = "text-embedding-005"
    texts = [f"chunk {i} " + " ".join(["switchboard"] * 120) for i in range(250)]
    assert sum(estimate_tokens(t) for t in texts) > 2 * MAX_INPUT_TOKENS
    with run_gateway(raw) as gw:
        reply = gw.client().embeddings.create(model="embed", input=texts)
    assert [d.index for d in reply.data] == list(range(250))
    sent = httpx.get(f"{simulator}/_sim/requests", params={"limit": "20"}).json()
    batches = [r["body"]["instances"] for r in sent if r["path"].endswith(":predict")
               and r["body"]["instances"][0]["content"].startswith("chunk ")]
    assert sum(len(b) for b in batches) == 250 and len(batches) > 1
    for batch in batches:
        assert sum(estimate_tokens(i["content"]) for i in batch) <= MAX_INPUT_TOKENS
