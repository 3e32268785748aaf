"""``private_only`` fails closed through a running gateway: when every private target of a call
with sensitive data has failed (refused connection, 5xx, hung past its timeout, circuit open),
the client gets 503 ``no_private_target`` naming the model, unary and streamed, the attempts
are in the call record, and the third-party target never receives the call. An error the
request itself caused (a 4xx from the private target) is answered as it is."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.api.conftest import (  # noqa: F401  (run_gateway: the fixture, used by name)
    GatewayFactory,
    RunningGateway,
    run_gateway,
)

EMAIL = "ann.lee@corp-example.com"


def config(simulator: str, black_hole: str) -> dict[str, Any]:
    third = {"type": "openai", "base_url": simulator + "/v1", "api_key": "sk-third"}
    private = {**third, "trust": "private"}
    return {
        "providers": {
            "api": {**third, "headers": {"x-who": "third"}},
            "refused": {**private, "base_url": "http://127.0.0.1:9/v1"},
            "failing": {**private, "headers": {"X-Return-Error": "503"}},
            "hung": {**private, "base_url": black_hole, "timeout_s": 0.5},
            "rejecting": {**private, "headers": {"X-Return-Error": "400"}},
        },
        "models": {
            # the third party first in order: a fallback to it would be the default path
            "two-down": {"targets": [{"provider": "api", "model": "gpt-4o-mini"},
                                     {"provider": "refused", "model": "gpt-4o-mini"},
                                     {"provider": "failing", "model": "gpt-4o-mini"}],
                         "privacy": {"action": "private_only"}},
            "hung": {"targets": [{"provider": "hung", "model": "gpt-4o-mini"},
                                 {"provider": "api", "model": "gpt-4o-mini"}],
                     "privacy": {"action": "private_only"}},
            "rejecting": {"targets": [{"provider": "rejecting", "model": "gpt-4o-mini"},
                                      {"provider": "api", "model": "gpt-4o-mini"}],
                          "privacy": {"action": "private_only"}},
        },
        "breaker": {"failures": 2, "min_calls": 100, "cooldown_s": 600,
                    "max_cooldown_s": 600},
        "drift": {"embedding": {"sample_rate": 0}},
        "retries": {"attempts": 0},
    }


@pytest.fixture
def gw(run_gateway: GatewayFactory, simulator: str,  # noqa: F811
       black_hole: str) -> Iterator[RunningGateway]:
    with run_gateway(config(simulator, black_hole)) as running:
        yield running


def third_party_saw(simulator: str, marker: str) -> list[Any]:
    entries: list[dict[str, Any]] = httpx.get(simulator + "/_sim/requests").json()
    return [e for e in entries if marker in str(e["body"])
            and e["headers"].get("x-who") == "third"]


def refused_closed(error: openai.APIStatusError, model: str) -> None:
    assert error.status_code == 503
    body = error.body
    assert isinstance(body, dict) and body["code"] == "no_private_target"
    assert body["type"] == "api_error"
    assert f"model '{model}'" in body["message"] and "EMAIL (1)" in body["message"]
    assert EMAIL not in body["message"]


def test_every_private_target_down_is_503_no_private_target(gw: RunningGateway,
                                                           simulator: str) -> None:
    """A refused connection and a 503: the call answers 503 no_private_target (not the last
    target's 503 ``upstream_error``), both attempts recorded, the third party skipped; streams
    too; and again once the breakers have opened."""
    marker = uuid.uuid4().hex
    client = gw.client()
    for _ in range(3):  # the third call finds both circuits open (2 failures each)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="two-down", messages=[
                {"role": "user", "content": f"{EMAIL} {marker}"}])
        refused_closed(caught.value, "two-down")
        record = gw.sink.records[-1]
        assert (record.status, record.http_status) == ("error", 503)
        assert record.privacy_action == "private_only"
        assert [(a.provider, a.status) for a in record.attempts] == [
            ("refused", 502), ("failing", 503)]
    with pytest.raises(openai.APIStatusError) as streamed:
        for _ in client.chat.completions.create(model="two-down", stream=True, messages=[
                {"role": "user", "content": f"{EMAIL} {marker}"}]):
            pass
    refused_closed(streamed.value, "two-down")
    assert [a.provider for a in gw.sink.records[-1].attempts] == ["refused", "failing"]
    assert third_party_saw(simulator, marker) == []
    plain = client.chat.completions.with_raw_response.create(model="two-down", messages=[
        {"role": "user", "content": f"nothing sensitive {marker}"}])
    assert plain.headers["x-switchboard-provider"] == "api"  # no finding: no confinement


def test_a_hung_private_target_times_out_into_503(gw: RunningGateway, simulator: str) -> None:
    """A private target that never answers: past its timeout, 503 no_private_target, not the
    504 of the timeout, and the third party never asked."""
    marker = uuid.uuid4().hex
    with pytest.raises(openai.APIStatusError) as caught:
        gw.client().chat.completions.create(model="hung", messages=[
            {"role": "user", "content": f"{EMAIL} {marker}"}])
    refused_closed(caught.value, "hung")
    assert [(a.provider, a.status) for a in gw.sink.records[-1].attempts] == [("hung", 504)]
    assert third_party_saw(simulator, marker) == []


def test_a_request_the_private_target_rejects_keeps_its_4xx(gw: RunningGateway,
                                                           simulator: str) -> None:
    """A 400 from the private target is the request's fault: the client gets it as it is."""
    marker = uuid.uuid4().hex
    with pytest.raises(openai.BadRequestError) as caught:
        gw.client().chat.completions.create(model="rejecting", messages=[
            {"role": "user", "content": f"{EMAIL} {marker}"}])
    assert isinstance(caught.value.body, dict)
    assert caught.value.body.get("code") != "no_private_target"
    assert third_party_saw(simulator, marker) == []
