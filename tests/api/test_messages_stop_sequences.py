"""``stop_reason: "stop_sequence"`` on ``/v1/messages`` from targets that do not speak the
Messages API: reported, with the sequence, where the upstream says a stop sequence ended the
answer (Cohere's ``STOP_SEQUENCE``, vLLM's ``stop_reason``); ``end_turn`` where it cannot say."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.api.conftest import GatewayFactory, RunningGateway, sim_config

USER: list[Any] = [{"role": "user", "content": "Tell me about switchboards"}]
SAID = "reply"
"""A word of every simulated answer ("Simulated reply to: ...")."""


def _config(simulator: str) -> dict[str, Any]:
    raw = sim_config(simulator,
                     co={"targets": [{"provider": "co", "model": "command-r-08-2024"}]},
                     gpt={"targets": [{"provider": "az", "model": "gpt-4o-mini"}]})
    raw["providers"]["co"] = {"type": "cohere", "base_url": simulator, "api_key": "co-k"}
    # OpenAI's wire, which names no stop sequence (the simulator's /v1 route answers as vLLM
    # does, with a choice's stop_reason)
    raw["providers"]["az"] = {"type": "azure_openai", "endpoint": simulator, "api_key": "az-k"}
    return raw


def _message(gw: RunningGateway, model: str, stops: list[str], *, stream: bool
             ) -> tuple[str, str | None]:
    """The stop reason and stop sequence of a ``/v1/messages`` answer (a stream's from its
    ``message_delta``)."""
    body = {"model": model, "max_tokens": 50, "messages": USER, "stop_sequences": stops,
            "stream": stream}
    answer = gw.http().post("/v1/messages", json=body,
                            headers={"anthropic-version": "2023-06-01"})
    assert answer.status_code == 200
    if not stream:
        message = answer.json()
        return message["stop_reason"], message["stop_sequence"]
    (delta,) = [orjson.loads(line[6:])["delta"] for line in answer.text.splitlines()
                if line.startswith("data: ") and '"message_delta"' in line]
    return delta["stop_reason"], delta["stop_sequence"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_cohere_stop_sequence_is_anthropics_stop_sequence(run_gateway: GatewayFactory,
                                                          simulator: str, stream: bool) -> None:
    """Cohere's ``STOP_SEQUENCE`` for a request with one stop sequence is ``stop_reason:
    "stop_sequence"`` naming it; with several, Cohere does not say which (``end_turn``); none
    matched is ``end_turn``."""
    with run_gateway(_config(simulator)) as gw:
        assert _message(gw, "co", [SAID], stream=stream) == ("stop_sequence", SAID)
        assert _message(gw, "co", [SAID, "never said"], stream=stream) == ("end_turn", None)
        assert _message(gw, "co", ["never said"], stream=stream) == ("end_turn", None)


def test_cohere_stop_sequence_is_named_on_chat_completions(run_gateway: GatewayFactory,
                                                           simulator: str) -> None:
    """On ``/v1/chat/completions`` the choice's ``finish_reason`` stays ``stop`` and its
    ``stop_reason`` names the sequence, as vLLM reports it."""
    with run_gateway(_config(simulator)) as gw:
        answer = gw.http().post("/v1/chat/completions", json={
            "model": "co", "messages": USER, "stop": SAID}).json()
    choice = answer["choices"][0]
    assert (choice["finish_reason"], choice["stop_reason"]) == ("stop", SAID)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_an_openai_stop_is_end_turn(run_gateway: GatewayFactory, simulator: str,
                                    stream: bool) -> None:
    """OpenAI's ``finish_reason: stop`` cannot tell a stop sequence from the end of the turn:
    ``end_turn``, with no sequence."""
    with run_gateway(_config(simulator)) as gw:
        assert _message(gw, "gpt", [SAID], stream=stream) == ("end_turn", None)
