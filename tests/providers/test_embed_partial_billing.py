"""A split embedding request that fails part-way: the batches answered before the failure were
billed upstream, so the call is accounted with their usage (the row's tokens and cost, the key's
TPM settle), not 0 (``fanout.in_order``'s ``usage``, ``GatewayError.billed``)."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from app import errors
from app.providers.fanout import in_order
from app.simulator.bedrock import TITAN_MAX_TOKENS
from app.usage import Usage, estimate_tokens
from tests.api.conftest import MASTER_KEY, GatewayFactory
from tests.providers.test_bedrock_gateway import config, run_gateway  # noqa: F401

TITAN = "amazon.titan-embed-text-v2:0"


def test_titan_batches_answered_before_a_refusal_are_accounted(
        run_gateway: GatewayFactory, simulator: str) -> None:  # noqa: F811
    """Titan embeds one text a call; with one call at a time, the two texts before one Titan
    refuses (too many tokens: a 400, not retried) were answered and billed: the failed call's
    row has their tokens and cost, and the key's TPM window is charged them."""
    raw = config(simulator, embed_concurrency=1)
    texts = ["alpha beta gamma", "delta epsilon", "word " * (TITAN_MAX_TOKENS + 100), "zeta"]
    billed = estimate_tokens(texts[0]) + estimate_tokens(texts[1])
    with run_gateway(raw) as gw:
        admin = httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {MASTER_KEY}"})
        made = admin.post("/admin/keys", json={"name": "split", "tpm": 100_000, "budget_usd": 5})
        assert made.status_code == 201, made.text
        key = made.json()["key"]
        headers = {"Authorization": f"Bearer {key}"}
        failed_id = uuid.uuid4().hex
        failed = httpx.post(f"{gw.url}/v1/embeddings", timeout=30,
                            headers={**headers, "x-request-id": failed_id},
                            json={"model": "titan", "input": texts})
        assert failed.status_code == 400, failed.text
        assert "Too many input tokens" in failed.json()["error"]["message"]
        row = gw.sink.emitted(failed_id)
        assert row.status == "error"
        assert row.usage == Usage(prompt_tokens=billed)
        assert row.cost_usd == pytest.approx(billed * 0.02 / 1e6)
        after = httpx.post(f"{gw.url}/v1/embeddings", headers=headers, timeout=30,
                           json={"model": "titan", "input": "eta theta"})
        assert after.status_code == 200, after.text
        spent = after.json()["usage"]["prompt_tokens"]
        assert int(after.headers["x-ratelimit-remaining-tokens"]) == 100_000 - billed - spent
        admin.close()


async def test_in_order_puts_the_answered_items_usage_on_the_failure() -> None:
    """The items answered before the failure, summed; estimated once one was cancelled in
    flight (it may have been billed, unknowably)."""
    async def step(item: int) -> int:
        await asyncio.sleep(0)
        if item == 2:
            raise errors.UpstreamRejected("refused", status=400)
        return item

    with pytest.raises(errors.UpstreamRejected) as one_at_a_time:
        await in_order(step, [0, 1, 2, 3], slots=asyncio.Semaphore(1),
                       usage=lambda item, _: Usage(prompt_tokens=10 + item))
    assert one_at_a_time.value.billed == Usage(prompt_tokens=21)

    hold = asyncio.Event()

    async def slow(item: int) -> int:
        if item == 3:
            await hold.wait()  # in flight when 2 fails: cancelled
        return await step(item)

    with pytest.raises(errors.UpstreamRejected) as together:
        await in_order(slow, [0, 1, 2, 3], slots=asyncio.Semaphore(4),
                       usage=lambda item, _: Usage(prompt_tokens=10 + item))
    assert together.value.billed == Usage(prompt_tokens=21, estimated=True)
