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


def test_a_streamed_answer_is_captured_assembled(gw: RunningGateway) -> None:
    """A streamed chat call's response body is its answer put together: the text the client
    got, the finish reason, the usage; a streamed completion's likewise."""
    marker = uuid.uuid4().hex
    stream = gw.client().chat.completions.create(
        model="chat", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": f"hello {marker}"}],
        extra_headers={"x-request-id": marker})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = next(c.usage for c in chunks if c.usage is not None)
    record = gw.sink.emitted(marker)
    body = record.response_body
    assert body is not None and record.request_body is not None
    assert body["object"] == "chat.completion" and body["id"] == chunks[0].id
    [choice] = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": text}
    assert choice["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == usage.completion_tokens

    marker = uuid.uuid4().hex
    pieces = gw.client().completions.create(model="chat", stream=True, prompt=f"hi {marker}",
                                            extra_headers={"x-request-id": marker})
    text = "".join(c.choices[0].text for c in pieces if c.choices)
    body = gw.sink.emitted(marker).response_body
    assert body is not None and body["object"] == "text_completion"
    assert body["choices"][0]["text"] == text and "usage" in body


def test_refused_calls_keep_their_request_body(gw: RunningGateway) -> None:
    """A call refused after its body was read keeps it: a 400 of its values, a 403 of a key
    that may not use the model; one refused before (no body read: a 401) has none."""
    sent: dict[str, Any] = {"model": "chat", "temperature": 5, "user": f"u-{MASTER_KEY}",
                            "messages": [{"role": "user", "content": "hi"}]}
    http = gw.http()
    marker = uuid.uuid4().hex
    refused = http.post("/v1/chat/completions", json=sent, headers={"x-request-id": marker})
    assert refused.status_code == 400, refused.text
    record = gw.sink.emitted(marker)
    assert record.request_body == {**sent, "user": "u-[redacted]"}
    assert record.response_body is None

    created = http.post("/admin/keys", json={"name": "embed-only", "models": ["embed"]})
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    marker = uuid.uuid4().hex
    sent = {"model": "chat", "messages": [{"role": "user", "content": f"my key {key}"}]}
    refused = http.post("/v1/chat/completions", json=sent,
                        headers={"x-request-id": marker, "Authorization": f"Bearer {key}"})
    assert refused.status_code == 403, refused.text
    record = gw.sink.emitted(marker)
    assert record.request_body == {"model": "chat", "messages": [
        {"role": "user", "content": "my key sk-sb-[redacted]"}]}

    marker = uuid.uuid4().hex
    refused = http.post("/v1/chat/completions", json=sent,
                        headers={"x-request-id": marker, "Authorization": "Bearer nope"})
    assert refused.status_code == 401
    assert gw.sink.emitted(marker).request_body is None


def test_no_refused_body_is_kept_where_a_privacy_policy_would_screen_it(
        run_gateway: GatewayFactory, simulator: str) -> None:  # noqa: F811
    """A model with a privacy policy: a call refused before the privacy stage saw it keeps no
    request body (its columns are screened by the policy; a body would hold what it keeps
    out)."""
    raw = sim_config(simulator)
    raw["models"]["chat"]["privacy"] = {"action": "redact"}
    raw["calllog"] = {"capture_bodies": True}
    with run_gateway(raw) as running:
        marker = uuid.uuid4().hex
        refused = running.http().post(
            "/v1/chat/completions", headers={"x-request-id": marker},
            json={"model": "chat", "temperature": 5,
                  "messages": [{"role": "user", "content": "mail me at a@example.com"}]})
        assert refused.status_code == 400, refused.text
        assert running.sink.emitted(marker).request_body is None
