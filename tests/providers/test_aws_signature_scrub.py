# ruff: noqa: F811  (pytest passes the imported run_gateway fixture by parameter name)
"""The SigV4 signature of a request (a credential derived per request, which no configured or
minted list holds) never reaches a client from an upstream error that echoes it: ``bedrock``
and ``sagemaker`` behind a running gateway, against the simulator's echo knob, and the scrubber's
own pattern."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from app import errors
from app.scrub import REDACTED, Scrubber
from app.simulator.aws_auth import TEST_ACCESS_KEY, TEST_SECRET_KEY
from tests.api.conftest import (  # noqa: F401  (run_gateway: the fixture, used by name)
    GatewayFactory,
    run_gateway,
)

CLAUDE = "anthropic.claude-3-5-haiku-20241022-v1:0"
ECHO = {"X-Sim-Echo-Key": "1"}
HEX64 = re.compile(r"[0-9a-f]{64}")


def config(simulator: str, headers: dict[str, str]) -> dict[str, Any]:
    keys = {"access_key_id": TEST_ACCESS_KEY, "secret_access_key": TEST_SECRET_KEY,
            "headers": headers}
    return {
        "providers": {
            "aws": {"type": "bedrock", "region": "us-east-1",
                    "base_url": f"{simulator}/bedrock", **keys},
            "sm": {"type": "sagemaker", "region": "eu-west-1",
                   "base_url": f"{simulator}/sagemaker", **keys},
        },
        "models": {
            "claude": {"targets": [{"provider": "aws", "model": CLAUDE}]},
            "titan": {"targets": [{"provider": "aws", "model": "amazon.titan-embed-text-v2:0"}]},
            "vllm": {"targets": [{"provider": "sm", "model": "llama-vllm-endpoint",
                                  "params": {"inference_component": "llama-ic"}}]},
        },
        "drift": {"embedding": {"sample_rate": 0}},
        "retries": {"attempts": 0},
    }


def sent_authorization(simulator: str) -> str:
    (sent,) = httpx.get(f"{simulator}/_sim/requests?limit=1").json()
    authorization: str = sent["headers"]["authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=")
    return authorization


def assert_unsigned(text: str, authorization: str) -> None:
    signature = authorization.rsplit("Signature=", 1)[1]
    assert HEX64.fullmatch(signature)
    assert signature not in text and "Signature=" not in text
    assert TEST_ACCESS_KEY not in text and f"credential: {REDACTED}" in text


@pytest.mark.parametrize(("path", "model", "status"), [
    ("/v1/messages", "claude", "400"), ("/v1/chat/completions", "claude", "400"),
    ("/v1/embeddings", "titan", "401"), ("/v1/chat/completions", "vllm", "400"),
    ("/v1/chat/completions", "vllm", "401")])
def test_an_echoed_authorization_is_redacted_whole(
        run_gateway: GatewayFactory, simulator: str, path: str, model: str,
        status: str) -> None:
    """An error echoing the SigV4 ``Authorization`` the gateway sent (Bedrock's Messages, chat
    and embeddings, SageMaker's chat; a refusal and a credential error) shows ``[redacted]``
    for the whole value, signature included, to the client (message and code) and in the call
    record."""
    body: dict[str, Any] = {"model": model, "max_tokens": 8,
                            "messages": [{"role": "user", "content": "hi"}]}
    if path == "/v1/embeddings":
        body = {"model": model, "input": ["a"]}
    with run_gateway(config(simulator, {"X-Return-Error": status, **ECHO})) as gw:
        answer = gw.http().post(path, json=body, headers={"x-request-id": "echo"})
        record = gw.sink.by_id("echo")
    authorization = sent_authorization(simulator)
    assert answer.status_code in (400, 502), answer.text
    assert_unsigned(answer.text, authorization)
    assert record.error_message is not None
    assert_unsigned(record.error_message, authorization)


def test_a_mid_stream_echo_is_redacted_whole(run_gateway: GatewayFactory,
                                             simulator: str) -> None:
    """An in-band exception of Bedrock's event stream that echoes the ``Authorization`` header
    reaches the client's error frame with the whole value ``[redacted]``."""
    with run_gateway(config(simulator, {"X-Sim-Error-After": "1", **ECHO})) as gw:
        text = gw.http().post("/v1/messages", json={
            "model": "claude", "max_tokens": 8, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}).text
    assert "event: error" in text
    assert_unsigned(text, sent_authorization(simulator))


def test_a_signature_in_any_form_is_scrubbed_with_no_secrets_configured() -> None:
    """``Signature=<64 hex>`` (any case, as in a presigned URL's ``X-Amz-Signature=``) is
    scrubbed from message, param and code though the scrubber holds no secret; other hex and
    short values are left alone."""
    signature = "87d9904187c4d85292b126f39e701ae6235d52cdeec13e29569adf7dc42d8736"
    exc = Scrubber([]).error(errors.UpstreamError(
        f"denied: SignedHeaders=host;x-amz-date, Signature={signature}; "
        f"url ?X-Amz-Signature={signature.upper()}&x=1 sha={signature}",  # not a signature
        code=f"signature={signature}", param="Signature=abc"))
    assert str(exc) == exc.message == (
        f"denied: SignedHeaders=host;x-amz-date, Signature={REDACTED}; "
        f"url ?X-Amz-Signature={REDACTED}&x=1 sha={signature}")
    assert exc.code == f"signature={REDACTED}" and exc.param == "Signature=abc"
