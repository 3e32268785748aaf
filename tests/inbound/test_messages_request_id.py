# ruff: noqa: F811  (pytest passes the imported run_gateway fixture by parameter name)
"""Anthropic's request id on ``/v1/messages``: every answer to a call (message, stream, error)
carries a ``request-id`` header, and an error body a top-level ``request_id``, both the call id,
so the anthropic SDK's ``request_id`` / ``_request_id`` name the call's record."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from tests.api.conftest import (  # noqa: F401 - run_gateway is a fixture, used by name
    MASTER_KEY,
    GatewayFactory,
    RunningGateway,
    run_gateway,
)

HI: Any = [{"role": "user", "content": "hi"}]


@pytest.fixture
def gw(run_gateway: GatewayFactory, simulator: str) -> Iterator[RunningGateway]:
    def oai(**headers: str) -> dict[str, Any]:
        return {"type": "openai", "base_url": simulator + "/v1", "api_key": "sk-s",
                "headers": headers}

    raw = {
        "providers": {"oai": oai(), "busy": oai(**{"X-Return-Error": "429"})},
        "models": {
            "gpt": {"targets": [{"provider": "oai", "model": "gpt-4o-mini"}]},
            "busy": {"targets": [{"provider": "busy", "model": "gpt-4o-mini"}]},
        },
        "drift": {"embedding": {"sample_rate": 0}},
        "retries": {"attempts": 0},
    }
    with run_gateway(raw) as running:
        yield running


def sdk(gw: RunningGateway, key: str = MASTER_KEY) -> Any:
    client = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)
    gw.opened.append(client)  # type: ignore[arg-type]  # closed with the gateway's clients
    return client


def test_sdk_reads_the_call_id_of_a_message_and_a_stream(gw: RunningGateway) -> None:
    """A message's ``_request_id`` and a stream's ``request_id`` are the call id of the call's
    record (``x-switchboard-call-id``)."""
    raw = sdk(gw).messages.with_raw_response.create(
        model="gpt", max_tokens=5, messages=HI, extra_headers={"x-request-id": "mine"})
    message = raw.parse()
    assert message._request_id == raw.headers["x-switchboard-call-id"]
    assert gw.sink.by_id("mine").id == message._request_id
    with sdk(gw).messages.stream(model="gpt", max_tokens=5, messages=HI) as stream:
        stream.until_done()
        assert stream.request_id == stream.response.headers["x-switchboard-call-id"]


@pytest.mark.parametrize(("model", "key", "kind"), [
    ("busy", MASTER_KEY, anthropic.RateLimitError),
    ("gpt", "sk-sb-wrong", anthropic.AuthenticationError),
    ("nope", MASTER_KEY, anthropic.NotFoundError),
], ids=["upstream-429", "gateway-401", "gateway-404"])
def test_an_error_carries_the_call_id_in_body_and_header(
        gw: RunningGateway, model: str, key: str, kind: type[Exception]) -> None:
    """An upstream's 429, the gateway's 401 and 404: the SDK's ``request_id`` (the
    ``request-id`` header) and the body's top-level ``request_id`` are the call id."""
    with pytest.raises(anthropic.APIStatusError) as caught:
        sdk(gw, key).messages.create(model=model, max_tokens=5, messages=HI)
    error = caught.value
    assert isinstance(error, kind)
    call_id = error.response.headers["x-switchboard-call-id"]
    assert error.request_id == call_id
    assert isinstance(error.body, dict) and error.body["request_id"] == call_id
    assert error.body["type"] == "error" and error.body["error"]["message"]
