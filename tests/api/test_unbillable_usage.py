"""Usage no provider could bill, end to end against the simulator (``X-Sim-Usage-Count``): a
count that is not a whole number makes the report none, whatever the provider, and the call is
estimated (the client's ``usage`` shows the estimate); a whole float is its number; an OpenAI
``cached_tokens`` that is negative or above the prompt is relayed to the client as it is
stored (0, or the prompt)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.calllog import CallRecord
from app.simulator.gemini import API_KEY
from tests.api.conftest import MASTER_KEY, GatewayFactory, RunningGateway, sim_config

USER: Any = [{"role": "user", "content": "Tell me about tides"}]
WHOLE_AND_STREAMED = pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])


def config(simulator: str, count: str) -> dict[str, Any]:
    """Models ``claude``, ``gemini`` and ``gpt`` whose upstreams report usage with ``count``
    (``X-Sim-Usage-Count``)."""
    headers = {"X-Sim-Usage-Count": count}
    raw = sim_config(simulator,
                     claude={"targets": [{"provider": "claude", "model": "claude-sonnet-4-5"}]},
                     gemini={"targets": [{"provider": "google", "model": "gemini-2.5-flash"}]},
                     gpt={"targets": [{"provider": "sim", "model": "gpt-4o-mini"}]})
    raw["providers"]["claude"] = {"type": "anthropic", "base_url": simulator,
                                  "api_key": "sk-ant", "headers": headers}
    raw["providers"]["google"] = {"type": "gemini", "api_key": API_KEY, "headers": headers,
                                  "base_url": simulator + "/gemini/v1beta"}
    raw["providers"]["sim"]["headers"] = headers
    return raw


def call(gw: RunningGateway, model: str, *, stream: bool) -> tuple[dict[str, Any], CallRecord]:
    """One chat call to ``model``; the usage the client got and the call's record."""
    client = gw.client()
    if stream:
        chunks = list(client.chat.completions.create(
            model=model, messages=USER, max_tokens=8, stream=True,
            stream_options={"include_usage": True}))
        usage = chunks[-1].usage
    else:
        usage = client.chat.completions.create(model=model, messages=USER, max_tokens=8).usage
    assert usage is not None
    return usage.model_dump(exclude_none=True), gw.sink.records[-1]


@WHOLE_AND_STREAMED
@pytest.mark.parametrize(("model", "count"), [
    ("claude", 'output_tokens="16"'), ("claude", "input_tokens=13.5"),
    ("claude", "output_tokens={}"), ("gemini", "candidatesTokenCount=true"),
    ("gemini", 'promptTokenCount="13"'), ("gpt", "completion_tokens=16.5")])
def test_a_count_that_is_not_one_is_estimated(run_gateway: GatewayFactory, simulator: str,
                                              model: str, count: str, stream: bool) -> None:
    """The call is accounted with an estimate (never 0 tokens as real usage, nor ``true`` as
    1), and the client's usage is that estimate."""
    with run_gateway(config(simulator, count)) as gw:
        usage, record = call(gw, model, stream=stream)
    assert record.usage is not None and record.usage.estimated
    assert record.usage.prompt_tokens > 0 and record.usage.completion_tokens > 1
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (
        record.usage.prompt_tokens, record.usage.completion_tokens)
    assert record.status == "ok"


def test_a_native_answer_says_the_estimate(run_gateway: GatewayFactory, simulator: str) -> None:
    """On ``/v1/messages`` to an Anthropic target, the answer relayed as it came says the
    estimate its call is accounted with, not the report it could not read."""
    with run_gateway(config(simulator, 'output_tokens="16"')) as gw:
        reply = httpx.post(gw.url + "/v1/messages", timeout=10, json={
            "model": "claude", "max_tokens": 8, "messages": USER},
            headers={"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01"}).json()
        record = gw.sink.records[-1]
    assert record.usage is not None and record.usage.estimated
    assert reply["usage"]["output_tokens"] == record.usage.completion_tokens > 0
    assert reply["usage"]["input_tokens"] == record.usage.prompt_tokens > 0


@WHOLE_AND_STREAMED
@pytest.mark.parametrize(("model", "count"), [("claude", "output_tokens=8.0"),
                                              ("gemini", "candidatesTokenCount=8.0")])
def test_a_whole_float_is_its_number(run_gateway: GatewayFactory, simulator: str, model: str,
                                     count: str, stream: bool) -> None:
    """``8.0`` is 8 tokens as reported, not an estimate."""
    with run_gateway(config(simulator, count)) as gw:
        usage, record = call(gw, model, stream=stream)
    assert record.usage is not None and not record.usage.estimated
    assert record.usage.completion_tokens == usage["completion_tokens"] == 8


@WHOLE_AND_STREAMED
@pytest.mark.parametrize(("cached", "expected"), [("-5", 0), ("999", None), ('"4"', 0)])
def test_an_openai_cached_count_is_relayed_as_stored(
        run_gateway: GatewayFactory, simulator: str, cached: str, expected: int | None,
        stream: bool) -> None:
    """A ``cached_tokens`` that is not a count reads (and reaches the client) as 0; one above
    the prompt as the prompt; the call itself is the upstream's, not estimated."""
    with run_gateway(config(simulator, f"cached_tokens={cached}")) as gw:
        usage, record = call(gw, "gpt", stream=stream)
    assert record.usage is not None and not record.usage.estimated
    prompt = record.usage.prompt_tokens
    want = prompt if expected is None else expected
    assert record.usage.cached_tokens == want
    assert usage["prompt_tokens_details"]["cached_tokens"] == want
    assert usage["prompt_tokens"] == prompt

