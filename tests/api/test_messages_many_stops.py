"""More than four ``stop_sequences`` on ``/v1/messages``: Anthropic takes them, OpenAI's
``stop`` takes four, so such a call goes to native targets only and is a 400 naming
``stop_sequences`` (not ``stop``, which the client never sent) for a model with none."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.inbound.anthropic import MAX_CHAT_STOPS, read_request
from tests.api.conftest import MASTER_KEY, GatewayFactory, RunningGateway
from tests.api.test_messages import USER, config, last_upstream_body

STOPS = ["one", "two", "three", "four", "five"]


def test_five_stop_sequences_are_for_a_native_target() -> None:
    """Five stop sequences make the call native-only and keep the chat call valid (its first
    four); four are translated as they are."""
    five = read_request({"model": "m", "max_tokens": 5, "messages": USER,
                         "stop_sequences": STOPS})
    assert [part.split(" (")[0] for part in five.native_only] == ["stop_sequences"]
    assert five.body["stop"] == STOPS[:MAX_CHAT_STOPS]
    four = read_request({"model": "m", "max_tokens": 5, "messages": USER,
                         "stop_sequences": STOPS[:4]})
    assert four.native_only == [] and four.body["stop"] == STOPS[:4]


@pytest.fixture
def gw(run_gateway: GatewayFactory, simulator: str) -> Iterator[RunningGateway]:
    with run_gateway(config(simulator)) as running:
        yield running


def _post(gw: RunningGateway, model: str) -> tuple[int, dict[str, object]]:
    answer = gw.http().post("/v1/messages", headers={"x-api-key": MASTER_KEY}, json={
        "model": model, "max_tokens": 20, "messages": USER, "stop_sequences": STOPS})
    body: dict[str, object] = answer.json()
    return answer.status_code, body


def test_a_native_target_takes_five_stop_sequences(gw: RunningGateway, simulator: str) -> None:
    """A Claude target gets all five, as the client wrote them."""
    status, _ = _post(gw, "claude")
    assert status == 200
    assert last_upstream_body(simulator)["stop_sequences"] == STOPS


def test_a_model_without_a_native_target_names_stop_sequences(gw: RunningGateway) -> None:
    """An OpenAI-only model answers a 400 naming ``stop_sequences``."""
    status, body = _post(gw, "gpt")
    error = body["error"]
    assert status == 400 and isinstance(error, dict)
    assert "stop_sequences" in str(error["message"]) and "stop'" not in str(error["message"])
