"""Captured bodies (``calllog: {capture_bodies: true}``) through a running gateway: the
gateway's own keys are scrubbed from them as from the row's other columns, wherever a client
put one (request and answer, values and object keys); streamed calls keep their assembled
answer, and calls refused after their body was read keep the request they sent."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.api.conftest import (  # noqa: F401  (run_gateway: the fixture, used by name)
    MASTER_KEY,
    GatewayFactory,
    RunningGateway,
    run_gateway,
    sim_config,
)

VIRTUAL = "sk-sb-Zq9_made-up-key"


@pytest.fixture
def gw(run_gateway: GatewayFactory, simulator: str) -> Iterator[RunningGateway]:  # noqa: F811
    raw = sim_config(simulator)
    raw["calllog"] = {"capture_bodies": True, "redact_patterns": ["SECRET-[0-9]+"]}
    with run_gateway(raw) as running:
        yield running


def _text(value: Any) -> str:
    return orjson.dumps(value).decode()


def test_own_keys_are_scrubbed_from_captured_bodies(gw: RunningGateway) -> None:
    """The master key and anything shaped as a virtual key, in ``user``, ``metadata`` (keys
    and values) and a prompt, are stored as the row's ``end_user`` and ``tags`` store them, in
    the request body and in the answer (the simulator echoes the prompt)."""
    marker = uuid.uuid4().hex
    gw.client().chat.completions.create(
        model="chat", user=f"u-{MASTER_KEY}",
        metadata={"k": VIRTUAL, MASTER_KEY[:20]: "v"},
        messages=[{"role": "user",
                   "content": f"{VIRTUAL} {MASTER_KEY} SECRET-42 {marker}"}],
        extra_headers={"x-request-id": marker})
    record = gw.sink.emitted(marker)
    assert record.end_user == "u-[redacted]"
    assert record.tags == {"k": "sk-sb-[redacted]", "[redacted]": "v"}
    request, response = record.request_body, record.response_body
    assert request is not None and response is not None
    assert request["user"] == record.end_user
    assert request["metadata"] == record.tags
    assert request["messages"][0]["content"] == \
        f"sk-sb-[redacted] [redacted] [redacted] {marker}"
    for stored in (request, response):
        text = _text(stored)
        assert MASTER_KEY[:8] not in text and VIRTUAL not in text and "SECRET-42" not in text
    assert "sk-sb-[redacted]" in response["choices"][0]["message"]["content"]
