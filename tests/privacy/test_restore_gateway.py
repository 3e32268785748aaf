# ruff: noqa: F811  (pytest passes the imported fixtures by parameter name)
"""End to end, through a running gateway against the simulator: values restored into JSON text
(tool calls' arguments, JSON-mode content, ``/v1/messages``' streamed ``partial_json``) keep it
valid JSON, a PEM key's newlines included; native streams carry no empty text deltas."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api.conftest import (  # noqa: F401  (run_gateway: the fixture, used by name)
    MASTER_KEY,
    GatewayFactory,
    RunningGateway,
    run_gateway,
)
from tests.privacy.test_gateway import (  # noqa: F401  (upstream: the fixture, used by name)
    EMAIL,
    Upstream,
    config,
    upstream,
)

PEM = ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n"
       'tail "quoted" \\ end\n-----END PRIVATE KEY-----')


@pytest.fixture
def gw(run_gateway: GatewayFactory, simulator: str) -> Iterator[RunningGateway]:
    with run_gateway(config(simulator)) as running:
        yield running


def tool(marker: str) -> dict[str, Any]:
    """A function whose only argument is fixed to the PEM key (the simulator answers with
    the schema's instance: the key)."""
    return {"type": "function", "function": {
        "name": "store", "description": f"store a key {marker}",
        "parameters": {"type": "object", "required": ["key"],
                       "properties": {"key": {"type": "string", "const": PEM}}}}}


@pytest.mark.parametrize("streamed", [False, True])
def test_tool_call_arguments_parse(gw: RunningGateway, upstream: Upstream,
                                   streamed: bool) -> None:
    """A tool call's arguments holding a restored PEM key parse, and hold the key; the
    upstream saw a placeholder."""
    kwargs: dict[str, Any] = {
        "model": "redacted", "tools": [tool(upstream.marker)], "tool_choice": "required",
        "messages": [{"role": "user", "content": f"store it {upstream.marker}"}]}
    client = gw.client()
    if streamed:
        arguments = "".join(call.function.arguments or ""
                            for chunk in client.chat.completions.create(stream=True, **kwargs)
                            for choice in chunk.choices
                            for call in choice.delta.tool_calls or ()
                            if call.function is not None)
    else:
        calls = client.chat.completions.create(**kwargs).choices[0].message.tool_calls
        assert calls is not None
        arguments = calls[0].function.arguments
    assert json.loads(arguments) == {"key": PEM}
    assert PEM not in str(upstream.received()[0]["body"])


@pytest.mark.parametrize("streamed", [False, True])
def test_json_mode_content_parses(gw: RunningGateway, upstream: Upstream,
                                  streamed: bool) -> None:
    """A JSON-mode answer quoting a PEM key (the simulator's ``{"reply": ...}``) parses,
    holding the key."""
    kwargs: dict[str, Any] = {
        "model": "redacted", "response_format": {"type": "json_object"},
        "messages": [{"role": "user", "content": f"{PEM} {upstream.marker}"}]}
    client = gw.client()
    if streamed:
        content = "".join(choice.delta.content or ""
                          for chunk in client.chat.completions.create(stream=True, **kwargs)
                          for choice in chunk.choices)
    else:
        content = client.chat.completions.create(**kwargs).choices[0].message.content or ""
    assert PEM in json.loads(content)["reply"]
    assert PEM not in str(upstream.received()[0]["body"])


def sse(response: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """A Messages stream's events: (name, payload)."""
    events: list[tuple[str, dict[str, Any]]] = []
    name = ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[len("data: "):])))
    return events


def messages_stream(gw: RunningGateway, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    with httpx.Client(base_url=gw.url, timeout=30) as http, http.stream(
            "POST", "/v1/messages", json={**body, "stream": True},
            headers={"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01"}) as response:
        assert response.status_code == 200
        return sse(response)


def test_messages_stream_partial_json_parses(gw: RunningGateway, upstream: Upstream) -> None:
    """/v1/messages streamed from a native Anthropic target, a forced tool call: the
    ``partial_json`` pieces concatenate to JSON holding the PEM key."""
    events = messages_stream(gw, {
        "model": "claude", "max_tokens": 256, "tool_choice": {"type": "any"},
        "tools": [{"name": "store", "description": f"store a key {upstream.marker}",
                   "input_schema": {"type": "object", "required": ["key"], "properties": {
                       "key": {"type": "string", "const": PEM}}}}],
        "messages": [{"role": "user", "content": f"store it {upstream.marker}"}]})
    partial = "".join(p["delta"]["partial_json"] for n, p in events
                      if n == "content_block_delta" and p["delta"]["type"] == "input_json_delta")
    assert json.loads(partial) == {"key": PEM}
    assert PEM not in str(upstream.received()[0]["body"])


def test_messages_stream_sends_no_empty_text_delta(gw: RunningGateway,
                                                   upstream: Upstream) -> None:
    """/v1/messages streamed from a native target while a placeholder is held back: no
    ``text_delta`` is empty, every block that starts stops, and the text is restored."""
    events = messages_stream(gw, {
        "model": "claude", "max_tokens": 64,
        "messages": [{"role": "user", "content": f"{EMAIL} {upstream.marker}"}]})
    deltas = [p["delta"]["text"] for n, p in events
              if n == "content_block_delta" and p["delta"]["type"] == "text_delta"]
    assert all(deltas), deltas
    assert EMAIL in "".join(deltas)
    started = [p["index"] for n, p in events if n == "content_block_start"]
    stopped = [p["index"] for n, p in events if n == "content_block_stop"]
    assert started == stopped and started


def test_stream_logprobs_tokens_restored(gw: RunningGateway, upstream: Upstream) -> None:
    """A streamed chat answer with logprobs: its tokens hold the values, never a placeholder's
    pieces, and spell the content."""
    stream = gw.client().chat.completions.create(
        model="redacted", stream=True, logprobs=True, top_logprobs=2,
        messages=[{"role": "user", "content": f"{EMAIL} {upstream.marker}"}])
    content, tokens = "", []
    for chunk in stream:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            if choice.logprobs is not None:
                tokens += [entry.token for entry in choice.logprobs.content or ()]
    assert EMAIL in content and "".join(tokens) == content
    assert not any("<EMAIL" in t or "_1>" in t for t in tokens)
