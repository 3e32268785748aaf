# ruff: noqa: F811  (pytest passes the imported run_gateway fixture by parameter name)
"""SageMaker containers' published answers (``fixtures/sagemaker``, each citing its source),
replayed byte for byte by a loopback upstream behind a ``type: sagemaker`` provider and read
through a running gateway with the openai SDK: LMI's chat answer and its JSON-lines stream,
TGI's tool-call answer and its generate answer with details."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai.types.chat import ChatCompletionMessageParam

from app.simulator import aws_eventstream as es
from app.simulator.aws_auth import TEST_ACCESS_KEY, TEST_SECRET_KEY
from app.simulator.sagemaker import payload_part
from tests.api.conftest import GatewayFactory, run_gateway  # noqa: F401 - a fixture
from tests.providers.replay import Replay
from tests.servers import serve

FIXTURES = Path(__file__).parent / "fixtures" / "sagemaker"
USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is deep learning?"}]


def fixture(name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    found.pop("_source")
    return found


@pytest.fixture(scope="module")
def replay() -> Iterator[tuple[Replay, str]]:
    upstream = Replay()
    with serve(upstream) as url:
        yield upstream, url


def config(url: str) -> dict[str, Any]:
    provider = {"type": "sagemaker", "region": "us-east-1", "base_url": url,
                "access_key_id": TEST_ACCESS_KEY, "secret_access_key": TEST_SECRET_KEY}
    return {
        "providers": {"sm": provider},
        "models": {
            "lmi": {"targets": [{"provider": "sm", "model": "lmi-endpoint"}]},
            "tgi": {"targets": [{"provider": "sm", "model": "tgi-endpoint",
                                 "params": {"format": "tgi"}}]},
        },
        "retries": {"attempts": 0},
    }


def test_lmi_chat_answer(run_gateway: GatewayFactory, replay: tuple[Replay, str]) -> None:
    """LMI's documented chat answer: its text, length finish and usage; the endpoint's name
    as the model (LMI's answer names none)."""
    upstream, url = replay
    published = fixture("lmi_chat.json")
    upstream.answer(json.dumps(published).encode())
    with run_gateway(config(url)) as gw:
        reply = gw.client().chat.completions.create(model="lmi", messages=USER, max_tokens=30)
        record = gw.sink.records[-1]
    assert upstream.paths[-1] == "/endpoints/lmi-endpoint/invocations"
    assert reply.choices[0].message.content == published["choices"][0]["message"]["content"]
    assert reply.choices[0].finish_reason == "length"
    assert reply.model == "lmi-endpoint"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens,
            reply.usage.total_tokens) == (33, 30, 63)
    assert record.usage is not None and not record.usage.estimated


@pytest.mark.parametrize("cuts", [(), (7,), (1, 60, 300, 301)])
def test_lmi_json_lines_stream(run_gateway: GatewayFactory, replay: tuple[Replay, str],
                               cuts: tuple[int, ...]) -> None:
    """LMI's documented stream chunks, sent as LMI sends them (JSON lines, no ``[DONE]``) in
    PayloadParts cut anywhere: the text and the length finish come through."""
    upstream, url = replay
    chunks = fixture("lmi_chat_stream.json")["chunks"]
    stream = "".join(json.dumps(chunk) + "\n" for chunk in chunks).encode()
    edges = [0, *cuts, len(stream)]
    upstream.parts = [payload_part(stream[a:b]) for a, b in itertools.pairwise(edges)]
    upstream.content_type = es.CONTENT_TYPE
    with run_gateway(config(url)) as gw:
        got = list(gw.client().chat.completions.create(model="lmi", messages=USER,
                                                       stream=True, max_tokens=30))
    assert upstream.paths[-1] == "/endpoints/lmi-endpoint/invocations-response-stream"
    assert "".join(c.choices[0].delta.content or "" for c in got if c.choices) == " Oh assist"
    assert [c.choices[0].finish_reason for c in got if c.choices][-1] == "length"


def test_tgi_tool_call_answer(run_gateway: GatewayFactory, replay: tuple[Replay, str]) -> None:
    """TGI's recorded tool-call answer: an OpenAI tool call with its arguments, no text, usage,
    and finish_reason tool_calls (TGI says stop); TGI's empty id and tool-call id "0" become
    OpenAI-style ones."""
    upstream, url = replay
    upstream.answer(json.dumps(fixture("tgi_chat_tool_call.json")).encode())
    with run_gateway(config(url)) as gw:
        reply = gw.client().chat.completions.create(model="tgi", messages=USER, max_tokens=100)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    (call,) = choice.message.tool_calls
    assert reply.id.startswith("chatcmpl-")
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_current_weather"
    assert json.loads(call.function.arguments) == {"location": "Brooklyn, NY",
                                                   "format": "fahrenheit"}
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (501, 29)


def test_tgi_generate_answer_with_details(run_gateway: GatewayFactory,
                                          replay: tuple[Replay, str]) -> None:
    """TGI's recorded generate answer, in the one-element list TGI's /invocations answers: the
    text, the length finish and generated_tokens as the completion tokens (no prefill sent, so
    the prompt is estimated)."""
    upstream, url = replay
    published = fixture("tgi_generate_details.json")
    upstream.answer(json.dumps([published]).encode())
    with run_gateway(config(url)) as gw:
        completion = gw.client().completions.create(model="tgi", prompt="Test request",
                                                    max_tokens=10)
        record = gw.sink.records[-1]
    assert completion.choices[0].text == " for /api/v1/projects/1"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 10
    assert record.usage is not None and record.usage.estimated
