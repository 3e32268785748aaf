"""The Replicate provider: input mapping, prediction and stream translation, real examples from
Replicate's docs, the provider against the simulator, and the replicate SDK against the
simulator's dialect."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import httpx
import pytest
from pydantic import SecretStr, ValidationError
from replicate.client import Client
from replicate.exceptions import ReplicateError
from replicate.prediction import Prediction
from replicate.stream import ServerSentEvent

from app import errors
from app.providers import replicate as provider
from app.providers.base import Json, Target
from app.providers.replicate_http import SSEReader, _host_trusted
from app.providers.replicate_input import FAMILIES, InputSpec, build_input, llama3_markup
from app.providers.replicate_output import (
    StreamTranslator,
    map_error,
    output_text,
    to_chat_completion,
)
from tests.providers.calls import chat, received

FIXTURES = Path(__file__).parent / "fixtures" / "replicate"
LLAMA = InputSpec(FAMILIES["llama3"], "llama3")
TOKEN = "r8_sim_secret_token_0123456789"


def fixture(name: str) -> Json:
    data: Json = json.loads((FIXTURES / name).read_text())
    assert data["_source"].startswith("https://replicate.com/")
    return data


def request(**body: Any) -> Any:
    body.setdefault("model", "m")
    body.setdefault("messages", [{"role": "user", "content": "Hello"}])
    return chat(body).request


# --- input mapping ---------------------------------------------------------------------------


def test_llama_single_turn_uses_prompt_and_system_prompt() -> None:
    """One user turn: prompt and system_prompt, so the model's own template wraps them."""
    got = build_input(request(messages=[{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": "Hi"}],
                              max_tokens=7, temperature=0.2, stop=["END", "\n\n"]),
                      LLAMA, params={}, max_tokens_default=None)
    assert got == {"prompt": "Hi", "system_prompt": "Be brief.", "max_tokens": 7,
                   "temperature": 0.2, "stop_sequences": "END,\n\n"}


def test_both_token_limits_send_the_smaller() -> None:
    """A client that sends max_tokens and max_completion_tokens is capped by the smaller, as
    every native translation reads them (the larger was sent)."""
    for sent in ({"max_tokens": 7, "max_completion_tokens": 900},
                 {"max_tokens": 900, "max_completion_tokens": 7}):
        got = build_input(request(**sent), LLAMA, params={}, max_tokens_default=None)
        assert got["max_tokens"] == 7


def test_llama_multi_turn_is_rendered_in_llama3_markup() -> None:
    """Several turns: Llama 3 chat markup as the prompt, with a pass-through template."""
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "A"},
                {"role": "assistant", "content": "B"}, {"role": "user", "content": "C"}]
    got = build_input(request(messages=messages), LLAMA, params={}, max_tokens_default=None)
    assert got["prompt_template"] == "{prompt}"
    assert got["prompt"] == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nA<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nB<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nC<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert "system_prompt" not in got
    assert llama3_markup("", [("user", "x")]).count("<|eot_id|>") == 1


def test_claude_multi_turn_is_a_transcript_and_drops_sampling_hints() -> None:
    """Claude on Replicate: a User/Assistant transcript; temperature has no input and is
    dropped."""
    spec = InputSpec(FAMILIES["claude"], "claude")
    messages = [{"role": "user", "content": "A"}, {"role": "assistant", "content": "B"},
                {"role": "user", "content": "C"}]
    got = build_input(request(messages=messages, temperature=0.3), spec, params={},
                      max_tokens_default=2048)
    assert got == {"prompt": "User: A\n\nAssistant: B\n\nUser: C", "max_tokens": 2048}


def test_gpt_family_sends_messages_and_max_completion_tokens() -> None:
    """OpenAI models on Replicate get a messages list (developer read as system)."""
    spec = InputSpec(FAMILIES["gpt"], "gpt")
    got = build_input(request(messages=[{"role": "developer", "content": "D"},
                                        {"role": "user", "content": [{"type": "text",
                                                                      "text": "Q"}]}],
                              max_completion_tokens=9, top_p=0.5), spec, params={},
                      max_tokens_default=None)
    assert got == {"messages": [{"role": "system", "content": "D"},
                                {"role": "user", "content": "Q"}],
                   "max_completion_tokens": 9, "top_p": 0.5}


def test_text_parts_join_with_newlines_and_refusals_count_as_text() -> None:
    """A message's text parts are joined by newlines (as chat templates render them, and as the
    AI21 translation does), and an assistant's earlier refusal part is its text."""
    messages = [{"role": "user", "content": [{"type": "text", "text": "u1a"},
                                             {"type": "text", "text": "u1b"}]},
                {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
                {"role": "user", "content": "u2"}]
    got = build_input(request(messages=messages), InputSpec(FAMILIES["granite"], "granite"),
                      params={}, max_tokens_default=None)
    assert got["prompt"] == "User: u1a\nu1b\n\nAssistant: No.\n\nUser: u2"
    got = build_input(request(messages=messages), InputSpec(FAMILIES["gpt"], "gpt"),
                      params={}, max_tokens_default=None)
    assert [m["content"] for m in got["messages"]] == ["u1a\nu1b", "No.", "u2"]


def test_a_user_refusal_part_is_still_refused() -> None:
    """Only an assistant's refusal is text; in any other message it is a part Replicate
    cannot take."""
    with pytest.raises(errors.InvalidRequest) as caught:
        build_input(request(messages=[{"role": "user", "content": [
            {"type": "refusal", "refusal": "x"}]}]), LLAMA, params={}, max_tokens_default=None)
    assert caught.value.param == "messages[0].content"


def test_custom_input_map_with_fixed_input_and_target_params_underneath() -> None:
    """An input_map renames fields; fixed input and target params lie under mapped values."""
    spec = InputSpec({"prompt": "text", "max_tokens": "max_new_tokens",
                      "temperature": "temp"}, None, {"repetition_penalty": 1.1, "text": "x"})
    got = build_input(request(messages=[{"role": "system", "content": "S"},
                                        {"role": "user", "content": "Q"}],
                              max_tokens=5, temperature=0.7),
                      spec, params={"top_k": 40}, max_tokens_default=None)
    assert got == {"repetition_penalty": 1.1, "top_k": 40, "text": "System: S\n\nQ",
                   "max_new_tokens": 5, "temp": 0.7}


@pytest.mark.parametrize(("body", "param"), [
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"stop": "a,b"}, "stop"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}, "messages[0].content"),
])
def test_unsupported_features_are_refused_naming_the_param(body: Json, param: str) -> None:
    """What Replicate predictions cannot do is a 400 naming the parameter, never dropped."""
    with pytest.raises(errors.InvalidRequest) as caught:
        build_input(request(**body), LLAMA, params={}, max_tokens_default=None)
    assert caught.value.param == param and caught.value.status_code == 400


def test_stop_refused_for_a_family_without_stop_input() -> None:
    """Claude on Replicate has no stop input: a stop is refused."""
    with pytest.raises(errors.InvalidRequest) as caught:
        build_input(request(stop="END"), InputSpec(FAMILIES["claude"], "claude"), params={},
                    max_tokens_default=None)
    assert caught.value.param == "stop"


def test_target_model_syntax_picks_the_creation_route() -> None:
    """owner/name, owner/name:version and deployments/owner/name map to their endpoints."""
    assert provider.parse_model("meta/meta-llama-3-8b-instruct").path == \
        "/models/meta/meta-llama-3-8b-instruct/predictions"
    version = provider.parse_model("acme/llm:5c7d5dc6dd8b")
    assert (version.path, version.version) == ("/predictions", "5c7d5dc6dd8b")
    assert provider.parse_model("deployments/acme/my-llama").path == \
        "/deployments/acme/my-llama/predictions"
    with pytest.raises(errors.InvalidRequest):
        provider.parse_model("not a model")


def test_config_checks_input_maps() -> None:
    """A model entry needs one of family/input_map, and maps use known canonical names."""
    with pytest.raises(ValidationError):
        provider.ModelInput.model_validate({"input_map": {"prompt": "p", "bogus": "x"}})
    with pytest.raises(ValidationError):
        provider.ModelInput.model_validate({})
    assert provider.ModelInput.model_validate({"family": "granite"}).family == "granite"


# --- output, stream and errors ---------------------------------------------------------------


def test_token_list_output_is_joined_with_usage_and_length_finish() -> None:
    """A list of tokens is joined; metrics give usage; reaching the limit reads as length."""
    prediction = {"id": "p1", "model": "meta/x", "status": "succeeded",
                  "output": ["Hel", "lo", " there"],
                  "metrics": {"input_token_count": 12, "output_token_count": 3}}
    body, usage = to_chat_completion(prediction, created=1, limit=3)
    assert body["choices"][0]["message"]["content"] == "Hello there"
    assert body["choices"][0]["finish_reason"] == "length"
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (12, 3)
    assert to_chat_completion(prediction, created=1, limit=100)[0]["choices"][0][
        "finish_reason"] == "stop"


def test_failed_prediction_is_a_retryable_upstream_error() -> None:
    """status failed: a 502 carrying Replicate's error text."""
    with pytest.raises(errors.UpstreamUnavailable) as caught:
        to_chat_completion({"id": "p", "status": "failed", "error": "CUDA OOM"}, created=1,
                           limit=None)
    assert caught.value.status_code == 502 and "CUDA OOM" in caught.value.message
    assert caught.value.code == "prediction_failed"


def test_problem_details_map_to_the_error_tree() -> None:
    """422 is a 400 on input; 429 stays 429; 401 is a gateway credential problem."""
    err = map_error(422, {"title": "Input validation failed", "status": 422,
                          "detail": "- input.max_tokens: Must be greater than or equal to 1"},
                    "")
    assert (err.status_code, err.param) == (400, "input") and "input.max_tokens" in err.message
    assert map_error(429, {"title": "Request was throttled", "detail": "slow down"},
                     "").status_code == 429
    assert map_error(401, {"title": "Unauthenticated"}, "").status_code == 502
    with pytest.raises(errors.BadUpstreamResponse):
        output_text({"image": "https://x"})


def test_stream_translator_emits_content_then_finish_and_usage() -> None:
    """output events become deltas; done then finish() gives finish_reason and usage."""
    translator = StreamTranslator(prediction_id="p", model="m", created=1)
    assert translator.first()["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert translator.feed("output", " world")[0]["choices"][0]["delta"] == {"content": " world"}
    assert translator.feed("logs", "loading") == []
    assert translator.feed("done", "{}") == [] and translator.done
    from app.usage import Usage
    last = translator.finish(Usage(prompt_tokens=4, completion_tokens=2), 10)
    assert last[0]["choices"][0]["finish_reason"] == "stop"
    assert last[1]["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}


def test_stream_done_with_reason_and_error_event_raise() -> None:
    """done {"reason": "canceled"} and an error event are upstream failures."""
    with pytest.raises(errors.UpstreamUnavailable) as caught:
        StreamTranslator(prediction_id="p", model="m", created=1).feed(
            "done", '{"reason": "canceled"}')
    assert caught.value.code == "prediction_canceled"
    with pytest.raises(errors.UpstreamUnavailable, match="boom"):
        StreamTranslator(prediction_id="p", model="m", created=1).feed(
            "error", '{"detail": "boom"}')
    with pytest.raises(errors.BadUpstreamResponse):
        StreamTranslator(prediction_id="p", model="m", created=1).finish(None, None)


def test_sse_reader_keeps_a_tokens_own_leading_space() -> None:
    """data: strips one space only, so ' world' stays ' world'; multi-line data joins."""
    reader = SSEReader()
    lines = [b"event: output\n", b"data:  world\n", b"\n", b"event: output\n", b"data: a\n",
             b"data: b\n", b"\n"]
    events = [e for e in (reader.line(line) for line in lines) if e is not None]
    assert [(e.event, e.data) for e in events] == [("output", " world"), ("output", "a\nb")]


def test_token_goes_only_to_hosts_under_the_base_domain() -> None:
    """The stream URL gets the token on *.replicate.com, not elsewhere."""
    base = "https://api.replicate.com/v1"
    assert _host_trusted("https://streaming.api.replicate.com/v1/predictions/x", base)
    assert _host_trusted("https://stream.replicate.com/v1/files/x", base)
    assert not _host_trusted("https://evil.example/v1/x", base)
    assert not _host_trusted("http://10.0.0.1/x", "http://127.0.0.1:8000/v1")


# --- real examples from Replicate's documentation --------------------------------------------


def test_reference_prediction_translates() -> None:
    """The HTTP reference's prediction object (string output, no token counts)."""
    prediction = fixture("prediction_hello_world.json")["prediction"]
    body, usage = to_chat_completion(prediction, created=5, limit=None)
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "hello Alice"}
    assert body["model"] == "replicate/hello-world"
    assert body["id"] == "chatcmpl-gm3qorzdhgbfurvjtvhg6dckhu"
    assert usage is None and "usage" not in body


def test_reference_stream_events_translate() -> None:
    """The streaming guide's events, parsed and translated."""
    data = fixture("stream_events.json")
    reader = SSEReader()
    events = [e for e in (reader.line(line.encode() + b"\n")
                          for line in data["sse"].split("\n")) if e is not None]
    translator = StreamTranslator(prediction_id="fuwwvjtbdmroc4xifxdcwqtdfq", model="m",
                                  created=1)
    chunks = [c for e in events for c in translator.feed(e.event, e.data)]
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == ["Once upon a time..."]
    assert translator.done
    assert _host_trusted(data["stream_url"], "https://api.replicate.com/v1")


def test_reference_llama_request_is_what_the_mapping_writes() -> None:
    """The Llama 3.1 405B example's input, from the equivalent OpenAI chat request."""
    data = fixture("llama_405b_example.json")
    expected = data["input"]
    route = provider.parse_model("meta/meta-llama-3.1-405b-instruct")
    assert "/v1" + route.path == data["path"]
    spec = InputSpec(FAMILIES["llama3"], "llama3",
                     {"min_tokens": 0, "presence_penalty": 0, "frequency_penalty": 0})
    got = build_input(request(messages=[
        {"role": "system", "content": expected["system_prompt"]},
        {"role": "user", "content": expected["prompt"]}],
        max_tokens=1024, temperature=0.6, top_p=0.9), spec, params={},
        max_tokens_default=None)
    assert got == expected
    _, usage = to_chat_completion(
        {"id": "zjq6szssxdrm20cgw0fsntgvbg", "status": "succeeded", "output": ["Tina"],
         "metrics": {"input_token_count": data["input_token_count"],
                     "output_token_count": data["output_token_count"]}},
        created=1, limit=1024)
    assert usage is not None and usage.total_tokens == 110


# --- the provider against the simulator ------------------------------------------------------


def build(simulator: str, session: aiohttp.ClientSession, **config: Any
          ) -> provider.ReplicatePredictions:
    raw = {"type": "replicate", "api_token": SecretStr(TOKEN), "base_url": simulator + "/v1",
           "poll_interval_s": 0.02, "poll_max_interval_s": 0.05, **config}
    return provider.build(provider.ReplicateProvider.model_validate(raw), session)


LLAMA_TARGET = Target(provider="r", model="meta/meta-llama-3-8b-instruct")


async def test_sync_chat_sends_prefer_wait_and_bearer(simulator: str,
                                                      session: aiohttp.ClientSession) -> None:
    """A quick prediction comes back finished from the creating request (no poll)."""
    rep = build(simulator, session)
    result = await rep.chat(chat({"model": "x", "max_tokens": 6,
                                  "messages": [{"role": "user", "content": "Tell me a joke"}]}),
                            target=LLAMA_TARGET)
    assert result.body["choices"][0]["message"]["content"] == "Simulated reply to: Tell"
    assert result.usage is not None and result.usage.completion_tokens == 6
    (record,) = await received(session, simulator)
    assert record["path"] == "/v1/models/meta/meta-llama-3-8b-instruct/predictions"
    headers = {k.lower(): v for k, v in record["headers"].items()}
    assert headers["prefer"] == "wait=60" and headers["authorization"] == f"Bearer {TOKEN}"


async def test_slow_prediction_is_polled_to_its_end(simulator: str,
                                                    session: aiohttp.ClientSession) -> None:
    """A prediction still processing when the wait ends is polled until it succeeds."""
    rep = build(simulator, session, family="granite",
                headers={"X-Sim-Replicate-Wait-Ms": "0", "X-Sim-Replicate-Duration-Ms": "150"})
    result = await rep.chat(chat({"model": "x", "max_tokens": 4,
                                  "messages": [{"role": "user", "content": "Hi"}]}),
                            target=Target(provider="r", model="acme/llm:abc123"))
    assert result.body["choices"][0]["message"]["content"] == "Simulated reply to"
    records = await received(session, simulator, limit=20)
    created = max(i for i, r in enumerate(records) if r["path"] == "/v1/predictions")
    polls = [r for r in records[created + 1:] if r["path"].startswith("/v1/predictions/r")]
    assert polls, "the prediction was never polled"
    assert records[created]["body"]["version"] == "abc123"


async def test_poll_timeout_cancels_the_prediction(simulator: str,
                                                   session: aiohttp.ClientSession) -> None:
    """Past the target's timeout: 504, and the prediction is cancelled upstream."""
    rep = build(simulator, session, headers={"X-Sim-Replicate-Wait-Ms": "0",
                                             "X-Sim-Replicate-Duration-Ms": "5000"})
    target = Target(provider="r", model="meta/meta-llama-3-8b-instruct", timeout_s=0.2)
    with pytest.raises(errors.UpstreamTimeout):
        await rep.chat(chat({"model": "x", "messages": [{"role": "user", "content": "Hi"}]}),
                       target=target)
    await rep.aclose()
    records = await received(session, simulator, limit=5)
    assert records[-1]["path"].endswith("/cancel")


async def test_stream_then_close_cancels_the_prediction(simulator: str,
                                                        session: aiohttp.ClientSession) -> None:
    """Closing a stream before done cancels the prediction; the simulator records it."""
    rep = build(simulator, session, headers={"X-Sim-Replicate-Duration-Ms": "3000"})
    stream = cast(AsyncGenerator[Json, None], rep.stream_chat(chat({
        "model": "x", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}),
        target=LLAMA_TARGET))
    first = await stream.__anext__()
    assert first["choices"][0]["delta"]["role"] == "assistant"
    await stream.aclose()
    await rep.aclose()
    records = await received(session, simulator, limit=10)
    created = max(i for i, r in enumerate(records) if r["path"].endswith("/predictions"))
    cancel = [r for r in records[created:] if r["path"].endswith("/cancel")]
    assert len(cancel) == 1
    ident = cancel[0]["path"].split("/")[3]
    async with session.get(f"{simulator}/v1/predictions/{ident}",
                           headers={"Authorization": f"Bearer {TOKEN}"}) as response:
        assert (await response.json())["status"] == "canceled"


async def test_stream_usage_comes_from_the_prediction_after_done(
        simulator: str, session: aiohttp.ClientSession) -> None:
    """Streamed text matches; the usage chunk carries the prediction's metrics."""
    rep = build(simulator, session)
    chunks = [c async for c in rep.stream_chat(chat({
        "model": "x", "stream": True, "max_tokens": 5,
        "messages": [{"role": "user", "content": "Tell me a joke"}]}), target=LLAMA_TARGET)]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Simulated reply to:"
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 5


async def test_failed_prediction_and_422_through_the_provider(
        simulator: str, session: aiohttp.ClientSession) -> None:
    """A failed prediction is a 502 with its error; an invalid input a 400 on input."""
    rep = build(simulator, session, headers={"X-Sim-Replicate-Fail": "1"})
    with pytest.raises(errors.UpstreamUnavailable, match="CUDA out of memory"):
        await rep.chat(chat({"model": "x", "messages": [{"role": "user", "content": "Hi"}]}),
                       target=LLAMA_TARGET)
    rep = build(simulator, session, models={
                    "acme/raw": {"input_map": {"prompt": "text", "max_tokens": "max_tokens"},
                                 "input": {"max_tokens": 0}}})
    with pytest.raises(errors.UpstreamRejected) as caught:
        await rep.chat(chat({"model": "x", "messages": [{"role": "user", "content": "Hi"}]}),
                       target=Target(provider="r", model="acme/raw"))
    assert (caught.value.status_code, caught.value.param) == (400, "input")


# --- the replicate SDK against the simulator -------------------------------------------------


@pytest.fixture
def sdk(simulator: str) -> Iterator[Callable[..., Client]]:
    """SDK clients on the simulator; each gets its own transport, closed at the end (the SDK
    offers no close of its own, and a pooled socket left open fails the test as a warning)."""
    transports: list[httpx.HTTPTransport] = []

    def make(token: str = TOKEN, **headers: str) -> Client:
        transports.append(httpx.HTTPTransport())
        return Client(api_token=token, base_url=simulator, headers=dict(headers),
                                transport=transports[-1])

    yield make
    for transport in transports:
        transport.close()


def test_sdk_run_create_get_cancel(sdk: Callable[..., Client]) -> None:
    """run(), predictions.create/get/cancel parse the simulator's predictions."""
    client = sdk()
    output = client.run("meta/meta-llama-3-8b-instruct",
                        input={"prompt": "Tell me about cats", "max_tokens": 4})
    assert "".join(output) == "Simulated reply to"
    created = client.predictions.create(model="meta/meta-llama-3-8b-instruct",
                                        input={"prompt": "Hi"})
    assert isinstance(created, Prediction) and created.urls is not None
    fetched = client.predictions.get(created.id)
    assert fetched.status == "succeeded" and fetched.metrics is not None
    assert isinstance(fetched.output, list)
    assert fetched.metrics["output_token_count"] == len(fetched.output)
    slow = sdk(**{"X-Sim-Replicate-Duration-Ms": "5000"})
    running = slow.predictions.create(version="5c7d5dc6dd8bf75c", input={"prompt": "Hi"})
    assert running.status == "processing"
    canceled = slow.predictions.cancel(running.id)
    assert canceled.status == "canceled" and canceled.completed_at is not None


def test_sdk_stream_and_deployment(sdk: Callable[..., Client]) -> None:
    """stream() yields the SDK's ServerSentEvents; deployments create predictions too."""
    client = sdk()
    events = list(client.stream("meta/meta-llama-3-8b-instruct",
                                input={"prompt": "Tell me about dogs", "max_tokens": 5}))
    assert all(isinstance(e, ServerSentEvent) for e in events)
    assert "".join(str(e) for e in events) == "Simulated reply to:"
    assert events[-1].event == ServerSentEvent.EventType.DONE
    deployed = client.deployments.predictions.create(deployment="acme/my-llama",
                                                     input={"prompt": "Hi"}, wait=True)
    assert deployed.model == "acme/my-llama" and deployed.status == "succeeded"


def test_sdk_reads_problem_details(sdk: Callable[..., Client]) -> None:
    """Errors are problem details the SDK's ReplicateError reads."""
    with pytest.raises(ReplicateError) as caught:
        sdk().predictions.create(model="a/b", input={"max_tokens": 0, "prompt": "x"})
    assert (caught.value.status, caught.value.title) == (422, "Input validation failed")
    with pytest.raises(ReplicateError) as unauth:
        sdk(Authorization="").predictions.get("x")
    assert unauth.value.status == 401

