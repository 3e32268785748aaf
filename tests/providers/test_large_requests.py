"""Request bodies past 1 MiB (a base64 image) sent upstream whole, by the JSON, SSE and signed
AWS transports, against the simulator; and ``request_body``'s choice of payload."""

# The gateway fixture lives in tests/api/conftest.py, outside this directory: imported here so
# pytest finds it, and then named by each test's parameter (which ruff reads as a redefinition).
# ruff: noqa: F811

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp.payload import TOO_LARGE_BYTES_BODY

from app.providers.http import request_body
from app.simulator.aws_auth import TEST_ACCESS_KEY, TEST_SECRET_KEY
from tests.api.conftest import (  # noqa: F401 - run_gateway is a fixture, used by name
    GatewayFactory,
    run_gateway,
    sim_config,
)

IMAGE = "data:image/png;base64," + base64.b64encode(bytes(range(256)) * 5000).decode()
"""A 1.7 MB data URL: the request carrying it is past aiohttp's 1 MiB ``TOO_LARGE_BYTES_BODY``."""
CLAUDE = "anthropic.claude-3-5-haiku-20241022-v1:0"


def messages() -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": "Describe this"},
                                         {"type": "image_url", "image_url": {"url": IMAGE}}]}]


def last_body(simulator: str) -> Any:
    (record,) = httpx.get(simulator + "/_sim/requests", params={"limit": "1"}).json()
    return record["body"]


def bedrock(simulator: str) -> dict[str, Any]:
    """Model ``chat`` on Claude through Bedrock (SigV4-signed requests)."""
    return {"providers": {"aws": {
                "type": "bedrock", "region": "us-east-1", "base_url": f"{simulator}/bedrock",
                "access_key_id": TEST_ACCESS_KEY, "secret_access_key": TEST_SECRET_KEY}},
            "models": {"chat": {"targets": [{"provider": "aws", "model": CLAUDE}]}},
            "drift": {"embedding": {"sample_rate": 0}}, "retries": {"attempts": 0}}


@pytest.mark.parametrize("stream", [False, True], ids=["answer", "stream"])
def test_a_request_past_one_mib_reaches_the_upstream_whole(
        run_gateway: GatewayFactory, simulator: str, stream: bool) -> None:
    """A chat request of 1.7 MB is answered 200, answer and stream alike, and the upstream gets
    the image intact (aiohttp's warning about raw bytes that large answered 500 under pytest)."""
    with run_gateway(sim_config(simulator)) as gw:
        client = gw.http()
        body = {"model": "chat", "messages": messages(), "stream": stream}
        with client.stream("POST", "/v1/chat/completions", json=body) as answer:
            text = answer.read().decode()
        assert answer.status_code == 200, text
        if stream:
            assert text.endswith("data: [DONE]\n\n") and '"error"' not in text, text
        else:
            reply = json.loads(text)["choices"][0]["message"]["content"]
            assert reply.startswith("Simulated reply to: Describe this")
        sent = last_body(simulator)
        assert sent["messages"][0]["content"][1]["image_url"]["url"] == IMAGE


def test_a_signed_request_past_one_mib_reaches_bedrock_whole(run_gateway: GatewayFactory,
                                                             simulator: str) -> None:
    """A 1.7 MB chat request to Bedrock is signed over, and sent as, the same bytes: answered
    200, the simulator's SigV4 check passing and the image's bytes arriving intact."""
    with run_gateway(bedrock(simulator)) as gw:
        answer = gw.http().post("/v1/chat/completions",
                                json={"model": "chat", "messages": messages(), "max_tokens": 8})
        assert answer.status_code == 200, answer.text
        blocks = last_body(simulator)["messages"][0]["content"]
        assert [b["image"]["source"]["bytes"] for b in blocks if "image" in b] == \
            [IMAGE.partition(",")[2]]


def test_request_body_keeps_small_bodies_as_bytes() -> None:
    """Up to aiohttp's threshold the bytes go as they are; past it, as a ``BytesIO`` payload of
    the same bytes and size (so the Content-Length stays exact)."""
    small = b"x" * TOO_LARGE_BYTES_BODY
    assert request_body(small) is small
    large = small + b"y"
    payload = request_body(large)
    assert isinstance(payload, aiohttp.BytesIOPayload)
    assert payload.size == len(large)
    assert payload.decode() == large.decode()
