# ruff: noqa: F811  (pytest passes the imported run_gateway fixture by parameter name)
"""End to end against the simulator: a card or phone number sent as a JSON number, and an
e-mail address in escaped JSON arguments, never reach a third party."""

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
from tests.privacy.test_gateway import Upstream, blocked, config

CARD, PHONE = 4111111111111111, 14155552671


@pytest.fixture
def gw(run_gateway: GatewayFactory, simulator: str) -> Iterator[RunningGateway]:
    with run_gateway(config(simulator)) as running:
        yield running


@pytest.fixture
def upstream(simulator: str) -> Upstream:
    return Upstream(simulator)


def assert_numbers_never_sent(upstream: Upstream) -> None:
    for entry in upstream.received():
        text = json.dumps(entry["body"])
        assert str(CARD) not in text and str(PHONE) not in text, text


def test_numbers_in_native_tool_use_input_are_redacted(gw: RunningGateway,
                                                       upstream: Upstream) -> None:
    answer = httpx.post(gw.url + "/v1/messages", headers={"x-api-key": MASTER_KEY}, json={
        "model": "claude", "max_tokens": 32, "messages": [
            {"role": "user", "content": f"pay {upstream.marker}"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "pay",
                                               "input": {"card": CARD, "phone": PHONE}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                          "content": "done"}]}]})
    assert answer.status_code == 200, answer.text
    assert_numbers_never_sent(upstream)
    sent = upstream.received()[0]["body"]["messages"][1]["content"][0]["input"]
    assert sent == {"card": "<CREDIT_CARD_1>", "phone": "<PHONE_1>"}


def test_numbers_are_blocked(gw: RunningGateway, upstream: Upstream) -> None:
    client, marker = gw.client(), upstream.marker
    ask = [{"role": "user", "content": f"summarise {marker}"}]
    error = blocked(client, model="blocked", messages=ask,
                    extra_body={"account": {"card": CARD, "phone": PHONE}})
    assert "CREDIT_CARD (1)" in error["message"] and "PHONE (1)" in error["message"]
    blocked(client, model="blocked", messages=ask, response_format={
        "type": "json_schema", "json_schema": {"name": "r", "schema": {
            "type": "object", "properties": {"c": {"type": "integer", "default": CARD}}}}})
    blocked(client, model="co-blocked", messages=ask,
            extra_body={"documents": [{"id": "d1", "data": {"card": CARD}}]})
    assert upstream.received() == []


def test_escaped_arguments_are_scanned_decoded(gw: RunningGateway, upstream: Upstream) -> None:
    client, marker = gw.client(), upstream.marker
    value = "jörg.müller@bücher.de"
    turns: list[Any] = [{"role": "user", "content": f"mail {marker}"},
             {"role": "assistant", "content": None, "tool_calls": [
                 {"id": "c1", "type": "function",
                  "function": {"name": "send", "arguments": json.dumps({"to": value})}}]},
             {"role": "tool", "tool_call_id": "c1", "content": json.dumps({"sent": value})}]
    blocked(client, model="blocked", messages=turns)
    assert upstream.received() == []
    client.chat.completions.create(model="redacted", messages=turns)
    sent = upstream.received()[0]["body"]["messages"]
    assert json.loads(sent[1]["tool_calls"][0]["function"]["arguments"]) == {"to": "<EMAIL_1>"}
    assert json.loads(sent[2]["content"]) == {"sent": "<EMAIL_1>"}


ESCAPED = json.dumps({"r": "jane.doe@example.com"}).replace("@", "\\u0040")


def test_escaped_tool_results_in_every_shape_are_scanned(gw: RunningGateway,
                                                         upstream: Upstream) -> None:
    """A tool result as text parts, JSON nested past the walk's depth (and past Python's
    recursion limit: refused, never a 500), a failed result's ``[tool error]`` marker: the
    escaped address is found, blocked, and redacted in the body that goes out."""
    client, marker = gw.client(), upstream.marker
    call: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    deep = "[" * 5000 + '"jane.doe\\u0040example.com"' + "]" * 5000
    for result in ([{"type": "text", "text": ESCAPED}], deep, "[tool error] " + ESCAPED):
        blocked(client, model="blocked", messages=[
            {"role": "user", "content": f"hi {marker}"}, call,
            {"role": "tool", "tool_call_id": "c1", "content": result}])
    assert upstream.received() == []
    headers = {"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01"}
    for model, is_error in (("claude", False), ("redacted", True)):
        answer = httpx.post(gw.url + "/v1/messages", headers=headers, json={
            "model": model, "max_tokens": 16, "messages": [
                {"role": "user", "content": f"hi {marker}"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f",
                                                   "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                              "is_error": is_error, "content": [
                                                  {"type": "text", "text": ESCAPED}]}]}]})
        assert answer.status_code == 200, answer.text
    native, translated = (entry["body"] for entry in upstream.received())
    for sent in (native, translated):
        assert "u0040" not in json.dumps(sent) and "jane.doe" not in json.dumps(sent)
    assert json.loads(native["messages"][2]["content"][0]["content"][0]["text"]) \
        == {"r": "<EMAIL_1>"}
    assert translated["messages"][-1]["content"] == '[tool error] {"r": "<EMAIL_1>"}'


def test_streams_restore_the_stop_sequence(gw: RunningGateway, upstream: Upstream) -> None:
    """A stop sequence holding a value comes back as the client wrote it, streamed as unary:
    a chat choice's ``stop_reason``, a native ``message_delta``'s ``stop_sequence``, and a
    translated ``/v1/messages`` stream's ``stop_reason: stop_sequence``."""
    stop, marker = "jane.doe@example.com", upstream.marker
    ask: list[Any] = [{"role": "user", "content": f"{marker} say {stop} now"}]
    client = gw.client()
    chunks = list(client.chat.completions.create(model="redacted", messages=ask, stop=[stop],
                                                 stream=True))
    ends = [c.choices[0] for c in chunks if c.choices and c.choices[0].finish_reason]
    assert ends and getattr(ends[-1], "stop_reason", None) == stop
    headers = {"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01"}
    for model in ("claude", "redacted"):
        text = httpx.post(gw.url + "/v1/messages", headers=headers, json={
            "model": model, "max_tokens": 50, "stream": True, "stop_sequences": [stop],
            "messages": ask}).text
        deltas = [json.loads(line[6:]) for line in text.splitlines()
                  if line.startswith("data: ") and '"message_delta"' in line]
        assert deltas and deltas[-1]["delta"]["stop_reason"] == "stop_sequence", (model, text)
        assert deltas[-1]["delta"]["stop_sequence"] == stop, (model, text)
    assert all(stop not in json.dumps(entry["body"]) for entry in upstream.received())
