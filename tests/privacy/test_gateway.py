# ruff: noqa: F811  (pytest passes the imported run_gateway fixture by parameter name)
"""End to end: the openai and anthropic SDKs through a running gateway against the simulator,
which shows what it received (``/_sim/requests``): planted values never reach a third party
under redact, block and private_only, streams included, and answers get them back."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.api.conftest import (  # noqa: F401  (run_gateway: the fixture, used by name)
    MASTER_KEY,
    GatewayFactory,
    RunningGateway,
    run_gateway,
)

EMAIL = "ann.lee@corp-example.com"
PHONE = "(415) 555-2671"
CARD = "4111 1111 1111 1111"
PLANTED = (EMAIL, PHONE, CARD, "4111111111111111", "ann.lee")


def config(simulator: str) -> dict[str, Any]:
    third = {"type": "openai", "base_url": simulator + "/v1", "api_key": "sk-third"}
    return {
        "providers": {
            "api": {**third, "headers": {"x-who": "third"}, "region": "us"},
            "onprem": {**third, "trust": "private", "headers": {"x-who": "private"},
                       "region": "eu"},
            "down": {**third, "base_url": "http://127.0.0.1:9/v1", "trust": "private"},
            "claude": {"type": "anthropic", "base_url": simulator, "api_key": "sk-ant-x",
                       "headers": {"x-who": "third"}},
            "co": {"type": "cohere", "base_url": simulator, "api_key": "co-key-x",
                   "headers": {"x-who": "third"}},
            # 9 pieces of "Simulated reply to: x <EMAIL_1>": up to "<EMAIL_1", no ">"
            "api-done": {**third, "headers": {"x-who": "third", "x-sim-done-after": "9"}},
            "api-end": {**third, "headers": {"x-who": "third", "x-sim-end-after": "9"}},
        },
        "models": {
            "redacted": {"targets": [{"provider": "api", "model": "gpt-4o-mini"}],
                         "privacy": {"action": "redact"}},
            "blocked": {"targets": [{"provider": "api", "model": "gpt-4o-mini"}],
                        "privacy": {"action": "block"}},
            "private": {"targets": [{"provider": "api", "model": "gpt-4o-mini"},
                                    {"provider": "onprem", "model": "gpt-4o-mini"}],
                        "privacy": {"action": "private_only"}},
            "private-down": {"targets": [{"provider": "down", "model": "gpt-4o-mini"},
                                         {"provider": "api", "model": "gpt-4o-mini"}],
                             "privacy": {"action": "private_only"}},
            "no-private": {"targets": [{"provider": "api", "model": "gpt-4o-mini"}],
                           "privacy": {"action": "private_only"}},
            "eu-only": {"targets": [{"provider": "api", "model": "gpt-4o-mini"},
                                    {"provider": "onprem", "model": "gpt-4o-mini"}],
                        "privacy": {"regions": ["eu"]}},
            "embed": {"targets": [{"provider": "api", "model": "text-embedding-3-small"}],
                      "privacy": {"action": "redact"}},
            "embed-private": {"targets": [{"provider": "api", "model": "text-embedding-3-small"},
                                          {"provider": "onprem",
                                           "model": "text-embedding-3-small"}],
                              "privacy": {"action": "redact", "embeddings": "private_only"}},
            "claude": {"targets": [{"provider": "claude", "model": "claude-3-5-haiku"}],
                       "privacy": {"action": "redact"}},
            "open": {"targets": [{"provider": "api", "model": "gpt-4o-mini"}]},
            "co-blocked": {"targets": [{"provider": "co", "model": "command-r"}],
                           "privacy": {"action": "block"}},
            "redacted-done": {"targets": [{"provider": "api-done", "model": "gpt-4o-mini"}],
                              "privacy": {"action": "redact"}},
            "redacted-end": {"targets": [{"provider": "api-end", "model": "gpt-4o-mini"}],
                             "privacy": {"action": "redact"}},
        },
        "calllog": {"capture_bodies": True},
        "drift": {"embedding": {"sample_rate": 0}},
        "retries": {"attempts": 0},
    }


@pytest.fixture
def gw(run_gateway: GatewayFactory, simulator: str) -> Iterator[RunningGateway]:
    with run_gateway(config(simulator)) as running:
        yield running


class Upstream:
    """What the simulator received since this test began (its log is shared by the session:
    each test's marker names its own requests)."""

    def __init__(self, simulator: str) -> None:
        self.simulator = simulator
        self.marker = uuid.uuid4().hex

    def received(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = httpx.get(self.simulator + "/_sim/requests").json()
        return [e for e in entries if self.marker in str(e["body"])]

    def assert_never_saw_planted(self) -> None:
        for entry in self.received():
            text = str(entry["body"])
            for value in PLANTED:
                assert value not in text, (value, entry["headers"].get("x-who"))


@pytest.fixture
def upstream(simulator: str) -> Upstream:
    return Upstream(simulator)


def messages(marker: str) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": f"case {marker}; customer {EMAIL}"},
        {"role": "user", "content": f"{EMAIL} phones {PHONE} pays {CARD} today"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "lookup", "arguments": f'{{"email": "{EMAIL}"}}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": f"found {EMAIL} at {PHONE}"},
        {"role": "user", "content": [{"type": "text", "text": f"{EMAIL} write to {PHONE}"}]},
    ]


def test_redact_unary(gw: RunningGateway, upstream: Upstream) -> None:
    """Redact: the upstream sees placeholders, stable across messages; the client gets its
    values back; the record counts entities and stores redacted bodies."""
    answer = gw.client().chat.completions.create(
        model="redacted", messages=messages(upstream.marker),  # type: ignore[arg-type]
        extra_headers={"x-request-id": upstream.marker})
    seen = upstream.received()
    assert len(seen) == 1 and seen[0]["headers"]["x-who"] == "third"
    upstream.assert_never_saw_planted()
    body = seen[0]["body"]
    assert body["messages"][1]["content"] == "<EMAIL_1> phones <PHONE_1> pays <CREDIT_CARD_1> today"
    assert body["messages"][0]["content"].endswith("customer <EMAIL_1>")
    assert body["messages"][2]["tool_calls"][0]["function"]["arguments"] == \
        '{"email": "<EMAIL_1>"}'
    assert body["messages"][3]["content"] == "found <EMAIL_1> at <PHONE_1>"
    text = answer.choices[0].message.content or ""
    assert text.startswith(f"Simulated reply to: {EMAIL} write to {PHONE}")
    record = gw.sink.by_id(upstream.marker)
    assert record.privacy_action == "redact"
    assert record.privacy_entities == {"EMAIL": 5, "PHONE": 3, "CREDIT_CARD": 1}
    for stored in (record.request_body, record.response_body):
        assert all(value not in str(stored) for value in PLANTED)


def test_redact_stream(gw: RunningGateway, upstream: Upstream) -> None:
    """Redact, streamed: placeholders split across chunks are restored in the client's text."""
    stream = gw.client().chat.completions.create(
        model="redacted", stream=True,
        messages=[{"role": "user", "content": f"{EMAIL} and {PHONE} é {upstream.marker}"}])
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    upstream.assert_never_saw_planted()
    assert upstream.received()[0]["body"]["messages"][0]["content"].startswith(
        "<EMAIL_1> and <PHONE_1>")
    assert "".join(pieces).startswith(f"Simulated reply to: {EMAIL} and {PHONE} é")
    assert not any("<EMAIL" in p or "_1>" in p for p in pieces)


def test_redact_completions(gw: RunningGateway, upstream: Upstream) -> None:
    """Completions prompts are redacted and restored too."""
    answer = gw.client().completions.create(model="redacted",
                                            prompt=f"{EMAIL} is {upstream.marker}")
    upstream.assert_never_saw_planted()
    assert upstream.received()[0]["body"]["prompt"].startswith("<EMAIL_1> is")
    assert EMAIL in answer.choices[0].text


def test_block(gw: RunningGateway, upstream: Upstream) -> None:
    """Block: 400 sensitive_data_blocked naming types and counts, never the values; nothing
    sent."""
    with pytest.raises(openai.BadRequestError) as caught:
        gw.client().chat.completions.create(model="blocked", messages=messages(upstream.marker),  # type: ignore[arg-type]
                                            extra_headers={"x-request-id": upstream.marker})
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "sensitive_data_blocked" and error["param"] == "messages"
    assert "EMAIL (5)" in error["message"] and "CREDIT_CARD (1)" in error["message"]
    assert all(value not in error["message"] for value in PLANTED)
    assert upstream.received() == []
    record = gw.sink.by_id(upstream.marker)
    assert (record.http_status, record.privacy_action) == (400, "block")
    assert all(value not in str(record.request_body) for value in PLANTED)


def test_private_only_routes_to_private(gw: RunningGateway, upstream: Upstream) -> None:
    """private_only: a call with sensitive data skips the third party (first in order) and
    goes to the private target, with its values; one without goes its usual way."""
    client = gw.client()
    answer = client.chat.completions.create(
        model="private", stream=True,
        messages=[{"role": "user", "content": f"{EMAIL} {upstream.marker}"}])
    assert EMAIL in "".join(c.choices[0].delta.content or "" for c in answer if c.choices)
    client.chat.completions.create(
        model="private", messages=[{"role": "user", "content": f"hello {upstream.marker}"}])
    who = [(e["headers"]["x-who"], EMAIL in str(e["body"])) for e in upstream.received()]
    assert who == [("private", True), ("third", False)]


def test_private_only_fails_closed(gw: RunningGateway, upstream: Upstream) -> None:
    """private_only with the private target down fails; the third party never gets the call.
    A model without a private target answers 503 no_private_target."""
    client = gw.client()
    with pytest.raises(openai.APIStatusError) as down:
        client.chat.completions.create(model="private-down", messages=[
            {"role": "user", "content": f"{EMAIL} {upstream.marker}"}])
    assert down.value.status_code >= 500
    with pytest.raises(openai.APIStatusError) as none:
        client.chat.completions.create(model="no-private", messages=[
            {"role": "user", "content": f"{EMAIL} {upstream.marker}"}])
    assert none.value.status_code == 503
    assert isinstance(none.value.body, dict) and none.value.body["code"] == "no_private_target"
    assert upstream.received() == []


def test_regions_skip_other_regions(gw: RunningGateway, upstream: Upstream) -> None:
    """A regions policy skips targets elsewhere, found values or not."""
    gw.client().chat.completions.create(
        model="eu-only", messages=[{"role": "user", "content": f"hi {upstream.marker}"}])
    assert [e["headers"]["x-who"] for e in upstream.received()] == ["private"]


def test_embeddings_never_redacted(gw: RunningGateway, upstream: Upstream) -> None:
    """Embeddings: redact means block by default, or private_only when configured."""
    client = gw.client()
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="embed", input=[f"{EMAIL} {upstream.marker}"])
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "input"
    client.embeddings.create(model="embed-private", input=[f"{EMAIL} {upstream.marker}"])
    seen = upstream.received()
    assert [e["headers"]["x-who"] for e in seen] == ["private"]
    assert seen[0]["body"]["input"] == [f"{EMAIL} {upstream.marker}"]


def test_allowed_model_untouched(gw: RunningGateway, upstream: Upstream) -> None:
    """A model without a privacy policy sends values as they are, and scans nothing."""
    gw.client().chat.completions.create(
        model="open", messages=[{"role": "user", "content": f"{EMAIL} {upstream.marker}"}],
        extra_headers={"x-request-id": upstream.marker})
    assert EMAIL in str(upstream.received()[0]["body"])
    assert gw.sink.by_id(upstream.marker).privacy_action is None


@pytest.mark.parametrize("streamed", [False, True])
def test_messages_native_redacted(gw: RunningGateway, upstream: Upstream,
                                  streamed: bool) -> None:
    """/v1/messages to a native Anthropic target: the native body is redacted, the answer
    (streamed or not) restored."""
    client: Any = anthropic.Anthropic(base_url=gw.url, api_key=MASTER_KEY, max_retries=0)
    try:
        kwargs: dict[str, Any] = {
            "model": "claude", "max_tokens": 64, "system": f"customer {EMAIL}",
            "messages": [{"role": "user", "content": f"{EMAIL} and {PHONE} {upstream.marker}"}]}
        if streamed:
            with client.messages.stream(**kwargs) as stream:
                text = "".join(stream.text_stream)
        else:
            text = client.messages.create(**kwargs).content[0].text
    finally:
        client.close()
    upstream.assert_never_saw_planted()
    body = upstream.received()[0]["body"]
    assert body["messages"][0]["content"].startswith("<EMAIL_1> and <PHONE_1>")
    assert body["system"] == "customer <EMAIL_1>"
    assert text.startswith(f"Simulated reply to: {EMAIL} and {PHONE}")


def blocked(client: openai.OpenAI, **kwargs: Any) -> dict[str, Any]:
    """The error body of a call the privacy policy blocks."""
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**kwargs)
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "sensitive_data_blocked", body
    return body


def test_text_starting_with_data_is_scanned(gw: RunningGateway, upstream: Upstream) -> None:
    """Text that merely starts with ``data:`` (a message, a text part) is scanned: blocked,
    never sent; a real base64 data URL beside it is not scanned."""
    client, marker = gw.client(), upstream.marker
    blocked(client, model="blocked",
            messages=[{"role": "user", "content": f"data: {EMAIL} {marker}"}])
    blocked(client, model="blocked", messages=[{"role": "user", "content": [
        {"type": "text", "text": f"data:{EMAIL} {marker}"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}])
    assert upstream.received() == []


def test_block_scans_documents_schemas_keys_and_ids(gw: RunningGateway,
                                                    upstream: Upstream) -> None:
    """Block refuses values in Cohere ``documents``, a ``response_format`` schema, a
    ``metadata`` key and a tool call's ids; nothing reaches the upstream."""
    client, marker = gw.client(), upstream.marker
    ask = [{"role": "user", "content": f"summarise {marker}"}]
    error = blocked(client, model="co-blocked", messages=ask, extra_body={
        "documents": [{"id": "d1", "data": {"text": f"contact {EMAIL}"}}]})
    assert "EMAIL (1)" in error["message"]
    blocked(client, model="blocked", messages=ask, response_format={
        "type": "json_schema", "json_schema": {"name": "r", "schema": {
            "type": "object", "properties": {"to": {"type": "string",
                                                    "description": f"write to {EMAIL}"}}}}})
    blocked(client, model="blocked", messages=ask, metadata={EMAIL: "x"})
    blocked(client, model="blocked", messages=[
        *ask, {"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call {EMAIL}", "type": "function",
             "function": {"name": "lookup", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": f"call {EMAIL}", "content": "done"}])
    assert upstream.received() == []


def test_messages_plain_text_document_redacted(gw: RunningGateway, upstream: Upstream) -> None:
    """/v1/messages: a plain-text document's ``data`` is redacted like the text beside it,
    and the captured body says what was sent."""
    client: Any = anthropic.Anthropic(base_url=gw.url, api_key=MASTER_KEY, max_retries=0)
    try:
        client.messages.create(
            model="claude", max_tokens=32, extra_headers={"x-request-id": upstream.marker},
            messages=[{"role": "user", "content": [
                {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                                "data": f"contact {EMAIL}"}},
                {"type": "text", "text": f"summarise for {EMAIL} {upstream.marker}"}]}])
    finally:
        client.close()
    upstream.assert_never_saw_planted()
    content = upstream.received()[0]["body"]["messages"][0]["content"]
    assert content[0]["source"]["data"] == "contact <EMAIL_1>"
    assert content[1]["text"].startswith("summarise for <EMAIL_1>")
    assert EMAIL not in str(gw.sink.by_id(upstream.marker).request_body)


def test_messages_native_only_text_is_redacted(gw: RunningGateway, upstream: Upstream) -> None:
    """/v1/messages to a native target: text only the native body carries (a document's
    ``title`` and ``context``) is found and redacted too, and the call counts it: the translated
    body holds none of it. An assistant's signed thinking block goes as it came."""
    client: Any = anthropic.Anthropic(base_url=gw.url, api_key=MASTER_KEY, max_retries=0)
    thinking = {"type": "thinking", "thinking": "write to <EMAIL_1> (alice@example.org)",
                "signature": "EqQBCkgIARAB" + "A" * 120}
    try:
        client.messages.create(
            model="claude", max_tokens=32, extra_headers={"x-request-id": upstream.marker},
            messages=[
                {"role": "user", "content": [
                    {"type": "document", "title": f"from {EMAIL}", "context": f"call {PHONE}",
                     "source": {"type": "text", "media_type": "text/plain", "data": "notes"}},
                    {"type": "text", "text": f"summarise {upstream.marker}"}]},
                {"role": "assistant", "content": [thinking]},
                {"role": "user", "content": "go on"}])
    finally:
        client.close()
    upstream.assert_never_saw_planted()
    sent = upstream.received()[0]["body"]["messages"]
    assert sent[0]["content"][0]["title"] == "from <EMAIL_1>"
    assert sent[0]["content"][0]["context"] == "call <PHONE_1>"
    assert sent[1]["content"][0] == thinking
    record = gw.sink.by_id(upstream.marker)
    assert record.privacy_action == "redact"
    assert record.privacy_entities and record.privacy_entities.get("EMAIL")


THINKING: Any = {"thinking": {"type": "enabled", "budget_tokens": 1024}}
WEATHER: Any = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}}, "required": ["city"]}}}


def test_signed_thinking_blocks_pass_redact_unchanged(gw: RunningGateway,
                                                      upstream: Upstream) -> None:
    """Under redact, Claude's thinking_blocks reach the client as Anthropic signed them
    (placeholders kept, plain and streamed alike; reasoning_content is restored) and go back
    byte for byte, so the tool loop is answered even when the history is trimmed and the
    placeholders are numbered anew (the simulated Anthropic checks the signature)."""
    http = gw.http()
    first: Any = [{"role": "user", "content": f"hello, I am {EMAIL} {upstream.marker}"},
                  {"role": "assistant", "content": "Hi"}]
    ask: Any = {"role": "user", "content": f"weather for bob@example.org? {upstream.marker}"}
    body: Any = {"model": "claude", "max_tokens": 2048, "tools": [WEATHER],
                 "tool_choice": "required", **THINKING}
    plain = http.post("/v1/chat/completions", json={**body, "messages": [*first, ask]})
    assert plain.status_code == 200, plain.text
    message = plain.json()["choices"][0]["message"]
    (block,) = message["thinking_blocks"]
    assert "<EMAIL_2>" in block["thinking"] and "bob@example.org" in message["reasoning_content"]
    with http.stream("POST", "/v1/chat/completions",
                     json={**body, "messages": [*first, ask], "stream": True}) as streamed:
        lines = [line for line in streamed.iter_lines() if line.startswith("data: {")]
    blocks = [b for line in lines for choice in httpx.Response(200, content=line[6:]).json()[
        "choices"] for b in choice["delta"].get("thinking_blocks") or ()]
    assert blocks == [block]
    result = {"role": "tool", "tool_call_id": message["tool_calls"][0]["id"], "content": "Sunny"}
    del body["tool_choice"]
    for history in ([*first, ask, message, result], [ask, message, result]):
        reply = http.post("/v1/chat/completions", json={**body, "messages": history})
        assert reply.status_code == 200, reply.text
        sent = upstream.received()[-1]["body"]["messages"]
        assert sent[-2]["content"][0] == block
    upstream.assert_never_saw_planted()


@pytest.mark.parametrize(("model", "action"), [
    ("blocked", "block"), ("private", "private_only"), ("redacted", "redact")])
def test_user_and_metadata_stored_placeholdered(gw: RunningGateway, upstream: Upstream,
                                                model: str, action: str) -> None:
    """The record's ``end_user`` and ``tags`` hold placeholders, not the values, whatever the
    action that found them (a blocked call's too: refused, it keeps its metadata as an
    answered call does)."""
    try:
        gw.client().chat.completions.create(
            model=model, user=EMAIL, metadata={"customer": EMAIL, EMAIL: "key"},
            messages=[{"role": "user", "content": f"hello {upstream.marker}"}],
            extra_headers={"x-request-id": upstream.marker})
    except openai.BadRequestError:
        assert model == "blocked"
    record = gw.sink.by_id(upstream.marker)
    assert record.privacy_action == action
    assert record.end_user == "<EMAIL_1>"
    assert record.tags == {"customer": "<EMAIL_1>", "<EMAIL_1>": "key"}


def test_held_tail_released_when_the_stream_ends_without_finish(
        gw: RunningGateway, upstream: Upstream) -> None:
    """A tail held back as a placeholder's possible start goes out when the upstream ends the
    stream without a finish_reason (usage chunk and [DONE] only), before the usage chunk."""
    stream = gw.client().chat.completions.create(
        model="redacted-done", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": f"x {EMAIL} {upstream.marker}"}],
        extra_headers={"x-request-id": upstream.marker})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Simulated reply to: x <EMAIL_1"
    assert chunks[-1].usage is not None and not chunks[-1].choices
    assert gw.sink.by_id(upstream.marker).status == "ok"


def test_held_tail_released_before_a_mid_stream_error(gw: RunningGateway,
                                                      upstream: Upstream) -> None:
    """A stream the upstream cuts short (no finish_reason, no [DONE]) sends what was held back
    before its error."""
    pieces: list[str] = []
    with pytest.raises(openai.APIError):
        for chunk in gw.client().chat.completions.create(
                model="redacted-end", stream=True,
                messages=[{"role": "user", "content": f"x {EMAIL} {upstream.marker}"}]):
            pieces.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(pieces) == "Simulated reply to: x <EMAIL_1"


@pytest.mark.parametrize("phone", [
    "+1 650 253 0000 ext. 123", "+1 650 253 0000 ext. 5", "650\t253\t0000",
    "+1 \uff16\uff15\uff10 \uff12\uff15\uff13 \uff10\uff10\uff10\uff10"])
def test_block_phone_shapes(gw: RunningGateway, upstream: Upstream, phone: str) -> None:
    """Phone numbers with an "ext." extension, tabs or fullwidth digits are blocked."""
    error = blocked(gw.client(), model="blocked", messages=[
        {"role": "user", "content": f"call {phone} {upstream.marker}"}])
    assert "PHONE (1)" in error["message"]
    assert upstream.received() == []


def test_digit_groups_past_the_scan_budget(gw: RunningGateway, upstream: Upstream) -> None:
    """Thousands of distinct digit groups (a body made to keep the phone detector busy) spend
    the request's scan budget: under redact and block the call is refused 413
    ``privacy_scan_limit`` and nothing is sent; under private_only the unchecked groups count as
    phone numbers, so the call goes to the private target."""
    rng = random.Random(13)
    groups = "".join(" ".join(f"{rng.randrange(10, 100)}" for _ in range(8)) + " | "
                     for _ in range(1500))
    content = f"{upstream.marker} {groups}"
    http = gw.http()
    for model in ("redacted", "blocked"):
        answer = http.post("/v1/chat/completions", json={
            "model": model, "messages": [{"role": "user", "content": content}]})
        assert answer.status_code == 413, answer.text
        error = answer.json()["error"]
        assert (error["code"], error["param"], error["type"]) == (
            "privacy_scan_limit", "messages", "invalid_request_error")
        assert "not sent" in error["message"]
    assert upstream.received() == []
    answer = http.post("/v1/chat/completions", json={
        "model": "private", "messages": [{"role": "user", "content": content}]})
    # (The simulator's context is 8,192 tokens: this body is past it, and its 400 is answered.)
    assert "maximum context length" in answer.text
    assert [e["headers"]["x-who"] for e in upstream.received()] == ["private"]
