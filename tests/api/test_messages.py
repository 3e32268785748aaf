"""Anthropic's Messages API coming in: the anthropic SDK (and LangChain's ChatAnthropic) against a
running gateway, routed natively to an Anthropic target and translated to an OpenAI one."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import SecretStr

from app.main import create_app
from app.settings import Settings
from tests.api.conftest import MASTER_KEY, GatewayFactory, RunningGateway

CLAUDE_MODEL = "claude-sonnet-4-20250514"
USER: list[Any] = [{"role": "user", "content": "Tell me about switchboards"}]
WEATHER = {"name": "get_weather", "description": "Current weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}


def config(simulator: str) -> dict[str, Any]:
    return {
        "providers": {
            "claude": {"type": "anthropic", "base_url": simulator, "api_key": "sk-ant-secret"},
            "sim": {"type": "openai", "base_url": simulator + "/v1",
                    "api_key": "sk-upstream-secret"},
            "throttled": {"type": "openai", "base_url": simulator + "/v1", "api_key": "sk-t",
                          "headers": {"X-Return-Error": "429"}},
            "cut": {"type": "anthropic", "base_url": simulator, "api_key": "sk-ant-c",
                    "headers": {"X-Sim-Error-After": "2"}},
            "slow": {"type": "openai", "base_url": simulator + "/v1", "api_key": "sk-s",
                     "headers": {"X-Sim-TPOT-Ms": "50", "X-Sim-Completion-Tokens": "200"}},
        },
        "models": {
            "claude": {"targets": [{"provider": "claude", "model": CLAUDE_MODEL}]},
            "gpt": {"targets": [{"provider": "sim", "model": "gpt-4o-mini"}]},
            "either": {"targets": [{"provider": "sim", "model": "gpt-4o-mini"},
                                   {"provider": "claude", "model": CLAUDE_MODEL}]},
            "throttled": {"targets": [{"provider": "throttled", "model": "gpt-4o-mini"}]},
            "cut": {"targets": [{"provider": "cut", "model": CLAUDE_MODEL}]},
            "slow": {"targets": [{"provider": "slow", "model": "gpt-4o-mini"}]},
        },
        "drift": {"embedding": {"sample_rate": 0}},
        "retries": {"attempts": 0},
    }


_MADE: list[anthropic.Anthropic] = []


@pytest.fixture
def gw(run_gateway: GatewayFactory, simulator: str) -> Iterator[RunningGateway]:
    with run_gateway(config(simulator)) as running:
        try:
            yield running
        finally:
            while _MADE:
                _MADE.pop().close()


def sdk(gw: RunningGateway, key: str = MASTER_KEY) -> Any:
    """An anthropic SDK client of the gateway (typed loosely: the tests send the gateway's
    public model names and extension fields, which the SDK's literal types do not list)."""
    client = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)
    _MADE.append(client)
    return client


def last_upstream_body(simulator: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(simulator + "/_sim/requests?limit=1").json()[0]["body"]
    return body


@pytest.mark.parametrize("model", ["claude", "gpt"])
def test_a_message_through_each_kind_of_target(gw: RunningGateway, model: str) -> None:
    """The SDK's own types parse the answer, natively or translated; usage is counted and
    the call is one record of /v1/messages."""
    reply = sdk(gw).messages.create(model=model, max_tokens=40, messages=USER,
                                    system="Be brief.", extra_headers={"x-request-id": model})
    assert reply.type == "message" and reply.role == "assistant"
    assert reply.content[0].type == "text" and "switchboards" in reply.content[0].text
    assert reply.stop_reason == "end_turn"
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0
    record = gw.sink.by_id(model)
    assert record.endpoint == "/v1/messages" and record.status == "ok"
    assert record.public_model == model and record.caller == "master"
    assert record.usage is not None and record.usage.completion_tokens == \
        reply.usage.output_tokens
    assert record.answer_text == reply.content[0].text


@pytest.mark.parametrize("model", ["claude", "gpt"])
def test_a_streamed_message_through_each_kind_of_target(gw: RunningGateway,
                                                        model: str) -> None:
    """The SDK's stream helper assembles the same message from the events, usage included."""
    with sdk(gw).messages.stream(model=model, max_tokens=40, messages=USER,
                                 extra_headers={"x-request-id": f"s-{model}"}) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].type == "text" and final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0
    record = gw.sink.by_id(f"s-{model}")
    assert record.stream and record.status == "ok"
    assert record.usage is not None and not record.usage.estimated
    assert record.usage.completion_tokens == final.usage.output_tokens


def test_a_translated_stream_reports_input_tokens_at_its_start(gw: RunningGateway) -> None:
    """A translated stream's ``message_start`` has the prompt's input tokens (the gateway's
    estimate, count_tokens' number: OpenAI-style upstreams report usage only at the end), as
    Anthropic's own stream has them; ``message_delta`` then has the upstream's count."""
    client = sdk(gw)
    estimate = client.messages.count_tokens(model="gpt", messages=USER).input_tokens
    with client.messages.stream(model="gpt", max_tokens=40, messages=USER) as stream:
        events = list(stream)
    start = next(e for e in events if e.type == "message_start")
    assert start.message.usage.input_tokens == estimate > 0
    delta = next(e for e in events if e.type == "message_delta")
    assert delta.usage.input_tokens and delta.usage.output_tokens > 0


def test_an_anthropic_target_gets_the_clients_body_untranslated(gw: RunningGateway,
                                                                simulator: str) -> None:
    """Cache control, top_k, thinking and metadata reach an Anthropic target as the client
    wrote them (only the model name is the target's); an OpenAI target gets a chat call."""
    system = [{"type": "text", "text": "You are a switchboard operator.",
               "cache_control": {"type": "ephemeral"}}]
    sdk(gw).messages.create(model="claude", max_tokens=40, messages=USER, system=system,
                            extra_body={"top_k": 5}, metadata={"user_id": "u-1"})
    sent = last_upstream_body(simulator)
    assert sent["model"] == CLAUDE_MODEL
    assert sent["system"] == system and sent["top_k"] == 5
    assert sent["metadata"] == {"user_id": "u-1"} and sent["messages"] == USER
    sdk(gw).messages.create(model="gpt", max_tokens=40, messages=USER, system=system,
                            extra_body={"top_k": 5}, metadata={"user_id": "u-1"})
    sent = last_upstream_body(simulator)
    assert sent["model"] == "gpt-4o-mini" and sent["user"] == "u-1"
    assert sent["messages"] == [{"role": "system", "content": "You are a switchboard operator."},
                                {"role": "user", "content": "Tell me about switchboards"}]
    assert "top_k" not in sent and "system" not in sent


@pytest.mark.parametrize("model", ["claude", "gpt"])
@pytest.mark.parametrize("streamed", [False, True])
def test_tool_use_and_its_result_round_trip(gw: RunningGateway, model: str,
                                            streamed: bool) -> None:
    """A forced tool comes back as a tool_use block with a parsed input; its result, sent
    back, gets an answer."""
    client = sdk(gw)
    asked: dict[str, Any] = {"model": model, "max_tokens": 60, "messages": USER,
                             "tools": [WEATHER], "tool_choice": {"type": "any"}}
    if streamed:
        with client.messages.stream(**asked) as stream:
            reply = stream.get_final_message()
    else:
        reply = client.messages.create(**asked)
    assert reply.stop_reason == "tool_use"
    use = next(block for block in reply.content if block.type == "tool_use")
    assert use.name == "get_weather" and isinstance(use.input, dict) and "city" in use.input
    follow = client.messages.create(model=model, max_tokens=40, tools=[WEATHER], messages=[
        *USER, {"role": "assistant", "content": [block.model_dump() for block in reply.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                      "content": "Sunny, 21 C"}]}])
    assert follow.content[0].type == "text" and follow.content[0].text


def test_what_only_a_native_target_can_serve_goes_to_one(gw: RunningGateway,
                                                         simulator: str) -> None:
    """A server tool cannot be translated: on a model with an Anthropic target the call goes
    there, and on a model with none it is a 400 naming the part."""
    search = {"type": "web_search_20250305", "name": "web_search", "max_uses": 1}
    reply = sdk(gw).messages.create(model="either", max_tokens=40, messages=USER,
                                    tools=[search], extra_headers={"x-request-id": "native"})
    assert reply.content[0].type == "text"
    assert gw.sink.by_id("native").provider == "claude"
    assert last_upstream_body(simulator)["tools"] == [search]
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk(gw).messages.create(model="gpt", max_tokens=40, messages=USER, tools=[search])
    error = caught.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error"
    assert "tools[0] (web_search_20250305)" in error["message"]


@pytest.mark.parametrize(("source", "kind"), [
    ({"type": "url", "url": "https://example.com/a.pdf"}, "url"),
    ({"type": "file", "file_id": "file_abc"}, "file"),
    ({"type": "content", "content": [{"type": "text", "text": "A switchboard manual."}]},
     "content"),
])
def test_a_turn_of_only_a_document_for_anthropic(gw: RunningGateway, simulator: str,
                                                 source: dict[str, Any], kind: str) -> None:
    """A user turn whose only block is a document only Anthropic can read (by URL, by file id,
    or of content blocks) reaches a model's Anthropic target as the client wrote it, and is
    counted; on a model with no Anthropic target it is a 400 naming that block."""
    turn = [{"role": "user", "content": [{"type": "document", "source": source}]}]
    reply = sdk(gw).messages.create(model="either", max_tokens=5, messages=turn,
                                    extra_headers={"x-request-id": f"doc-{kind}"})
    assert reply.content[0].type == "text"
    record = gw.sink.by_id(f"doc-{kind}")
    assert record.provider == "claude" and record.status == "ok"
    assert last_upstream_body(simulator)["messages"] == turn
    assert sdk(gw).messages.count_tokens(model="claude", messages=turn).input_tokens > 0
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk(gw).messages.create(model="gpt", max_tokens=5, messages=turn)
    error = caught.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error"
    assert f"'messages[0].content[0] (document with a {kind} source)' can only be sent to a " \
        "target that speaks Anthropic's Messages API natively" in error["message"]


def test_a_model_of_both_kinds_translates_for_the_first(gw: RunningGateway) -> None:
    """Without native-only parts, a model's targets are tried in order, translated or not."""
    sdk(gw).messages.create(model="either", max_tokens=40, messages=USER,
                            extra_headers={"x-request-id": "both"})
    assert gw.sink.by_id("both").provider == "sim"


def test_errors_come_in_anthropics_shape(gw: RunningGateway) -> None:
    """Bad keys, bad requests, unknown models and upstream limits: the SDK's own error types,
    each still one call record."""
    with pytest.raises(anthropic.AuthenticationError) as auth:
        sdk(gw, key="sk-wrong").messages.create(model="gpt", max_tokens=5, messages=USER)
    assert auth.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as bad:
        sdk(gw).messages.create(model="gpt", max_tokens=0, messages=USER)
    assert "max_tokens" in bad.value.message
    with pytest.raises(anthropic.BadRequestError):
        sdk(gw).messages.create(model="gpt", max_tokens=5, messages=[])
    with pytest.raises(anthropic.NotFoundError) as missing:
        sdk(gw).messages.create(model="nope", max_tokens=5, messages=USER)
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.RateLimitError) as limited:
        sdk(gw).messages.create(model="throttled", max_tokens=5, messages=USER,
                                extra_headers={"x-request-id": "limited"})
    assert limited.value.response.headers["retry-after"]
    assert "sk-t" not in limited.value.message
    assert gw.sink.by_id("limited").http_status == 429


def test_an_error_mid_stream_is_an_error_event(gw: RunningGateway) -> None:
    """After the first byte, an upstream failure reaches the SDK as Anthropic's error event."""
    with pytest.raises(anthropic.APIStatusError), sdk(gw).messages.stream(
            model="cut", max_tokens=40, messages=USER,
            extra_headers={"x-request-id": "cut"}) as stream:
        for _ in stream:
            pass
    assert gw.sink.by_id("cut").status == "error"


def test_a_client_leaving_a_stream_cancels_the_upstream(gw: RunningGateway,
                                                        simulator: str) -> None:
    assert gw.leave_a_stream(simulator, request_id="gone", path="/v1/messages", lines=6,
                             headers={"x-api-key": MASTER_KEY},
                             body={"model": "slow", "max_tokens": 300, "messages": USER,
                                   "stream": True}) == 1
    assert gw.sink.by_id("gone").status == "cancelled"


def test_count_tokens(gw: RunningGateway) -> None:
    """count_tokens answers the gateway's estimate, more for a longer prompt, and refuses
    what messages.create refuses."""
    client = sdk(gw)
    short = client.messages.count_tokens(model="claude", messages=USER)
    longer = client.messages.count_tokens(model="claude", messages=[
        {"role": "user", "content": "Tell me about switchboards " * 20}], system="Be brief.")
    assert 0 < short.input_tokens < longer.input_tokens
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="nope", messages=USER)
    with pytest.raises(anthropic.AuthenticationError):
        sdk(gw, key="sk-wrong").messages.count_tokens(model="claude", messages=USER)


def test_count_tokens_refuses_a_prompt_template_as_messages_does(gw: RunningGateway) -> None:
    """A body naming a prompt template is the same 400 (``prompt_not_supported``) on
    count_tokens as on /v1/messages: no count for a call that would be refused."""
    refusals = []
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        reply = httpx.post(gw.url + path, headers={"x-api-key": MASTER_KEY}, json={
            "model": "gpt", "max_tokens": 5, "prompt": {"id": "summ"}, "messages": USER})
        assert reply.status_code == 400, (path, reply.text)
        refusals.append(reply.json())
    assert refusals[0].pop("request_id")  # the call's id: count_tokens is no call
    assert refusals[0] == refusals[1]
    assert "not take 'prompt'" in refusals[0]["error"]["message"]


def test_count_tokens_counts_tools_images_and_tool_calls(gw: RunningGateway) -> None:
    """What the model reads besides the text counts: the tool definitions (an agent's can run
    to thousands of tokens), an image and a tool call in the history."""
    client = sdk(gw)
    base = client.messages.count_tokens(model="claude", messages=USER).input_tokens
    schema = {"type": "object", "properties": {
        f"field_{i}": {"type": "string", "description": f"The value of field number {i}."}
        for i in range(40)}}
    with_tools = client.messages.count_tokens(model="claude", messages=USER, tools=[
        {"name": "fill_form", "description": "Fill in the form.", "input_schema": schema}])
    assert with_tools.input_tokens > base + 400
    image = client.messages.count_tokens(model="claude", messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "iVBORw0KGgo="}},
        {"type": "text", "text": USER[0]["content"]}]}]).input_tokens
    assert image >= base + 85
    called = client.messages.count_tokens(model="claude", messages=[
        *USER, {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1",
                                                  "name": "fill_form",
                                                  "input": {"field_1": "x " * 200}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": "done"}]}]).input_tokens
    assert called > base + 200


def test_unserved_endpoints_say_so(gw: RunningGateway) -> None:
    """A path the gateway does not serve is a 404 saying it is not supported, in the shape
    its clients read."""
    http = gw.http()
    response = http.post("/v1/responses", json={"model": "gpt", "input": "hi"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "unsupported_endpoint"
    assert "does not serve POST /v1/responses" in error["message"]
    served = error["message"].split(" It serves ")[1]
    app = create_app(Settings(master_key=SecretStr(MASTER_KEY), call_log=False)).app
    for context in iter_route_contexts(app.router.routes):  # every /v1 route is named
        route = context.original_route
        if isinstance(route, APIRoute) and route.path.startswith("/v1/"):
            path = re.sub(r"\{(\w+)(:\w+)?\}", "{model}", route.path)
            assert f"{path}," in served or f"{path};" in served, (path, served)
    batches = http.post("/v1/messages/batches", json={})
    assert batches.status_code == 404
    assert batches.json()["type"] == "error"
    assert batches.json()["error"]["type"] == "not_found_error"


def test_langchain_chat_anthropic_works_against_the_gateway(gw: RunningGateway) -> None:
    """LangChain's ChatAnthropic, pointed at the gateway, invokes and streams."""
    from langchain_anthropic import ChatAnthropic

    chat = ChatAnthropic(model_name="gpt", base_url=gw.url, api_key=MASTER_KEY,  # type: ignore[call-arg]
                         max_tokens_to_sample=40, max_retries=0, timeout=10, stop=None)
    answer = chat.invoke("Tell me about switchboards")
    assert isinstance(answer.content, str) and "switchboards" in answer.content
    assert "".join(str(chunk.content) for chunk in chat.stream("Tell me about switchboards"))


def _upstream_headers(simulator: str) -> dict[str, str]:
    entry = httpx.get(simulator + "/_sim/requests?limit=1").json()[0]
    return {name.lower(): value for name, value in entry["headers"].items()}


@pytest.mark.parametrize("stream", [False, True])
def test_the_clients_betas_and_version_reach_an_anthropic_target(gw: RunningGateway,
                                                                 simulator: str,
                                                                 stream: bool) -> None:
    """The SDK's ``betas`` (an ``anthropic-beta`` header) go on to Anthropic as that header,
    and the client's ``anthropic-version`` replaces the configured one."""
    client = sdk(gw)
    asked: dict[str, Any] = {
        "model": "claude", "max_tokens": 20, "messages": USER,
        "betas": ["context-1m-2025-08-07", "files-api-2025-04-14"],
        "extra_headers": {"anthropic-version": "2024-01-01"}}
    if stream:
        with client.beta.messages.stream(**asked) as events:
            events.get_final_message()
    else:
        client.beta.messages.create(**asked)
    headers = _upstream_headers(simulator)
    assert headers["anthropic-beta"] == "context-1m-2025-08-07,files-api-2025-04-14"
    assert headers["anthropic-version"] == "2024-01-01"


def test_no_beta_header_without_the_clients(gw: RunningGateway, simulator: str) -> None:
    """A client that sends neither header (not the SDK, which sends its version): no beta
    header goes on, and the configured anthropic-version does."""
    answer = gw.http().post("/v1/messages",
                            json={"model": "claude", "max_tokens": 20, "messages": USER})
    assert answer.status_code == 200, answer.text
    headers = _upstream_headers(simulator)
    assert "anthropic-beta" not in headers and headers["anthropic-version"] == "2023-06-01"


@pytest.mark.parametrize(("name", "value"), [
    ("anthropic-beta", "files api"), ("anthropic-beta", ",".join(["b"] * 33)),
    ("anthropic-version", "latest"),
])
def test_malformed_anthropic_headers_are_a_400(gw: RunningGateway, name: str,
                                               value: str) -> None:
    """A beta name that is not a token, too many names or a version that is not a date: a 400
    in Anthropic's shape naming the header."""
    answer = gw.http().post("/v1/messages", headers={name: value},
                            json={"model": "claude", "max_tokens": 5, "messages": USER})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and name in error["message"]
