"""Parts of a call's usage that providers bill apart, priced end to end against the simulator:
Anthropic's 1-hour cache writes (``usage.cache_creation``) at their own rate, on native
``/v1/messages`` (whole and streamed), translated chat streams and Claude on Bedrock; and
Bedrock targets given as ARNs, priced by the model id inside."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.calllog import CallRecord
from app.simulator.aws_auth import TEST_ACCESS_KEY, TEST_SECRET_KEY
from tests.api.conftest import MASTER_KEY, GatewayFactory, RunningGateway

SONNET = "claude-sonnet-4-20250514"
HAIKU = "anthropic.claude-haiku-4-5-20251001-v1:0"
FOUNDATION_ARN = f"arn:aws:bedrock:us-east-1::foundation-model/{HAIKU}"
PROFILE_ARN = f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.{HAIKU}"
APPLICATION_ARN = ("arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/"
                   "a1b2c3d4e5f6")
ANTHROPIC = {"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01"}
OPENAI = {"Authorization": f"Bearer {MASTER_KEY}"}
SYSTEM: list[dict[str, Any]] = [
    {"type": "text", "text": "Stable instructions kept for an hour. " * 30,
     "cache_control": {"type": "ephemeral", "ttl": "1h"}},
    {"type": "text", "text": "Context that changes more often. " * 10,
     "cache_control": {"type": "ephemeral"}}]
BODY: dict[str, Any] = {"max_tokens": 20, "system": SYSTEM,
                        "messages": [{"role": "user", "content": "Tell me about switchboards"}]}
WHOLE_AND_STREAMED = pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])


@pytest.fixture
def gw(run_gateway: GatewayFactory, simulator: str) -> Iterator[RunningGateway]:
    config = {
        "providers": {
            "claude": {"type": "anthropic", "base_url": simulator, "api_key": "sk-ant"},
            "aws": {"type": "bedrock", "region": "us-east-1", "base_url": f"{simulator}/bedrock",
                    "access_key_id": TEST_ACCESS_KEY, "secret_access_key": TEST_SECRET_KEY},
        },
        "models": {
            "sonnet": {"targets": [{"provider": "claude", "model": SONNET}]},
            "bedrock-claude": {"targets": [{"provider": "aws", "model": HAIKU}]},
            "foundation-arn": {"targets": [{"provider": "aws", "model": FOUNDATION_ARN}]},
            "profile-arn": {"targets": [{"provider": "aws", "model": PROFILE_ARN}]},
            "application-arn": {"targets": [{"provider": "aws", "model": APPLICATION_ARN}]},
        },
        "retries": {"attempts": 0},
    }
    with run_gateway(config) as running:
        yield running


def _call(gw: RunningGateway, model: str, request_id: str, *, stream: bool,
          openai: bool = False) -> CallRecord:
    """One call of ``BODY`` to ``model`` (``openai``: on ``/v1/chat/completions``), read to its
    end; its record."""
    if openai:
        path, headers = "/v1/chat/completions", OPENAI
        body: dict[str, Any] = {"max_tokens": 20, "messages": [
            {"role": "system", "content": SYSTEM}, *BODY["messages"]]}
    else:
        path, headers, body = "/v1/messages", ANTHROPIC, dict(BODY)
    with httpx.stream("POST", gw.url + path, timeout=10,
                      json={**body, "model": model, "stream": stream},
                      headers={**headers, "x-request-id": request_id}) as answer:
        answer.read()
        assert answer.status_code == 200, answer.text
    return gw.sink.by_id(request_id)


def _sonnet_cost(record: CallRecord) -> float:
    """The call's cost by hand at Claude Sonnet 4's list rates: fresh input $3, 5-minute cache
    writes $3.75, 1-hour writes $6, output $15 per million tokens."""
    usage = record.usage
    assert usage is not None
    hour = usage.cache_write_1h_tokens
    fresh = usage.prompt_tokens - usage.cache_write_tokens - usage.cached_tokens
    return (fresh * 3.0 + (usage.cache_write_tokens - hour) * 3.75 + hour * 6.0
            + usage.completion_tokens * 15.0) / 1e6


@WHOLE_AND_STREAMED
def test_one_hour_cache_writes_are_priced_at_their_rate(gw: RunningGateway,
                                                        stream: bool) -> None:
    """A native /v1/messages call whose system prompt is cached for an hour, then for five
    minutes: its record splits the writes as usage.cache_creation did, and costs each part at
    its own rate (the hour at 2x input, not the 5-minute 1.25x)."""
    record = _call(gw, "sonnet", f"native-{stream}", stream=stream)
    usage = record.usage
    assert usage is not None and not usage.estimated
    assert 0 < usage.cache_write_1h_tokens < usage.cache_write_tokens
    assert record.cost_usd == pytest.approx(_sonnet_cost(record))
    all_five_minutes = (usage.prompt_tokens * 3.0 + usage.cache_write_tokens * 0.75
                        + usage.completion_tokens * 15.0) / 1e6
    assert record.cost_usd is not None and record.cost_usd > all_five_minutes


def test_a_translated_stream_keeps_the_one_hour_split(gw: RunningGateway) -> None:
    """An OpenAI client's stream to an Anthropic target carries the split through its usage
    chunk: the same usage and cost as the native call."""
    native = _call(gw, "sonnet", "native", stream=False)
    translated = _call(gw, "sonnet", "translated", stream=True, openai=True)
    assert translated.usage is not None and native.usage is not None
    assert translated.usage.cache_write_1h_tokens == native.usage.cache_write_1h_tokens
    assert translated.cost_usd == pytest.approx(_sonnet_cost(translated))


@WHOLE_AND_STREAMED
def test_claude_on_bedrock_reads_the_split(gw: RunningGateway, stream: bool) -> None:
    """Claude's Messages API on Bedrock (InvokeModel) reports the same split; the shipped
    Bedrock price has no 1-hour rate, so the hour is priced as a 5-minute write."""
    record = _call(gw, "bedrock-claude", f"bedrock-{stream}", stream=stream)
    usage = record.usage
    assert usage is not None and 0 < usage.cache_write_1h_tokens < usage.cache_write_tokens
    fresh = usage.prompt_tokens - usage.cache_write_tokens
    assert record.cost_usd == pytest.approx(
        (fresh * 1.0 + usage.cache_write_tokens * 1.25 + usage.completion_tokens * 5.0) / 1e6)


def test_bedrock_arns_are_priced_by_the_model_inside(gw: RunningGateway) -> None:
    """A foundation-model ARN costs what its model id does, a system inference profile ARN what
    its profile does (us.: 10% more); an application inference profile ARN names no model and
    is unpriced (chat completions, through Converse)."""
    by_id = _call(gw, "bedrock-claude", "by-id", stream=False, openai=True)
    foundation = _call(gw, "foundation-arn", "foundation", stream=False, openai=True)
    profile = _call(gw, "profile-arn", "profile", stream=False, openai=True)
    application = _call(gw, "application-arn", "application", stream=False, openai=True)
    assert by_id.cost_usd and by_id.usage == foundation.usage == profile.usage
    assert foundation.cost_usd == pytest.approx(by_id.cost_usd)
    assert profile.cost_usd == pytest.approx(by_id.cost_usd * 1.1)
    assert application.usage is not None and application.cost_usd is None
