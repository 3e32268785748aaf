"""Legacy completions and embeddings through the SDK, on the simulator and the mock provider."""

from __future__ import annotations

import math

import openai
import pytest

from app.embeddings import decode_vector
from tests.api.conftest import GatewayFactory, RunningGateway

MOCK = {
    "providers": {"mock": {"type": "mock"}},
    "models": {"mock-chat": {"targets": [{"provider": "mock", "model": "mock-chat"}]},
               "mock-embed": {"targets": [{"provider": "mock", "model": "mock-embed"}]}},
}


def test_completions_round_trip(gateway: RunningGateway) -> None:
    """A legacy completion returns choices[0].text and usage."""
    completion = gateway.client().completions.create(model="chat", prompt="Once upon a time",
                                                     max_tokens=8)
    assert completion.object == "text_completion"
    assert completion.choices[0].text
    assert completion.usage is not None and completion.usage.completion_tokens <= 8


def test_completions_stream(gateway: RunningGateway) -> None:
    """A streamed legacy completion relays text pieces."""
    chunks = list(gateway.client().completions.create(model="chat", prompt="Hello",
                                                      stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices)


def test_embeddings_float_and_base64(gateway: RunningGateway) -> None:
    """Embeddings come back as floats or base64, for one input or many."""
    client = gateway.client()
    one = client.embeddings.create(model="embed", input="hello", encoding_format="float")
    assert len(one.data) == 1 and len(one.data[0].embedding) > 0
    many = client.embeddings.create(model="embed", input=["a", "b", "c"], dimensions=8)
    assert [d.index for d in many.data] == [0, 1, 2]
    assert all(len(d.embedding) == 8 for d in many.data)
    # The SDK decodes base64 itself; check that the wire really was base64 too.
    raw = client.embeddings.with_raw_response.create(model="embed", input="hello",
                                                     encoding_format="base64")
    wire = raw.http_response.json()["data"][0]["embedding"]
    assert isinstance(wire, str)
    assert decode_vector(wire) == pytest.approx(one.data[0].embedding, abs=1e-6)


def test_mock_provider_is_deterministic_and_unit_length(run_gateway: GatewayFactory) -> None:
    """The mock provider echoes, counts tokens, and gives stable unit vectors."""
    with run_gateway(MOCK) as gw:
        client = gw.client()
        reply = client.chat.completions.create(
            model="mock-chat", messages=[{"role": "user", "content": "ping pong"}])
        assert reply.choices[0].message.content == "Mock reply to: ping pong"
        assert reply.usage is not None and reply.usage.completion_tokens > 0
        a = client.embeddings.create(model="mock-embed", input="same text").data[0].embedding
        b = client.embeddings.create(model="mock-embed", input="same text").data[0].embedding
        assert a == b
        assert math.sqrt(sum(x * x for x in a)) == pytest.approx(1.0)
        cut = client.chat.completions.create(
            model="mock-chat", max_tokens=2,
            messages=[{"role": "user", "content": "a long message to echo back"}])
        assert cut.choices[0].finish_reason == "length"


def test_mock_failure_injection(run_gateway: GatewayFactory) -> None:
    """A mock with fail_status fails every Nth call with that status (retries off: the
    client sees it)."""
    raw = {"providers": {"mock": {"type": "mock", "fail_status": 429, "fail_every": 2}},
           "models": {"m": {"targets": [{"provider": "mock", "model": "m"}]}},
           "retries": {"attempts": 0}}
    with run_gateway(raw) as gw:
        client = gw.client()
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])


def test_a_failure_a_moment_cures_is_retried_on_the_same_target(
        run_gateway: GatewayFactory) -> None:
    """With retries on (the default), the mock's every-other-call 429 is retried after a
    backoff and the client never sees it; the record lists both attempts."""
    raw = {"providers": {"mock": {"type": "mock", "fail_status": 503, "fail_every": 2}},
           "models": {"m": {"targets": [{"provider": "mock", "model": "m"}]}}}
    with run_gateway(raw) as gw:
        client = gw.client()
        for _ in range(4):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        statuses = [[a.status for a in r.attempts] for r in gw.sink.records]
        assert statuses == [[200], [503, 200], [503, 200], [503, 200]]


def test_too_many_embedding_inputs_is_400(run_gateway: GatewayFactory) -> None:
    """More inputs than limits.max_embedding_inputs is a 400 naming 'input'."""
    raw = {**MOCK, "limits": {"max_embedding_inputs": 2}}
    with run_gateway(raw) as gw, pytest.raises(openai.BadRequestError) as info:
        gw.client().embeddings.create(model="mock-embed", input=["a", "b", "c"])
    assert info.value.param == "input"


def test_empty_embedding_input_is_400(run_gateway: GatewayFactory) -> None:
    """An empty string or list as input is a 400."""
    with run_gateway(MOCK) as gw:
        bad: str | list[str]
        for bad in ("", []):
            with pytest.raises(openai.BadRequestError):
                gw.client().embeddings.create(model="mock-embed", input=bad)
