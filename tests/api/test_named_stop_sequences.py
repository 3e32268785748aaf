"""The stop sequence that ended an answer, from TGI (its ``stop_sequence`` finish and the text it
keeps the sequence in) and Bedrock Converse (its ``stopReason: stop_sequence``, and Claude's
``additionalModelResponseFields.stop_sequence``): the choice's ``stop_reason`` (vLLM's) on
OpenAI's routes, and Anthropic's ``stop_reason: "stop_sequence"`` on ``/v1/messages`` (TGI; on
Bedrock that route reaches only Claude, natively); whole and streamed."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from app.simulator.aws_auth import TEST_ACCESS_KEY, TEST_SECRET_KEY
from tests.api.conftest import MASTER_KEY, GatewayFactory, RunningGateway, sim_config

USER: list[Any] = [{"role": "user", "content": "Tell me about switchboards"}]
SAID = "reply"
"""A word of every simulated answer ("Simulated reply to: ...")."""
NEVER = "never said"
CLAUDE = "anthropic.claude-3-5-haiku-20241022-v1:0"
WHOLE_AND_STREAMED = pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])


def _config(simulator: str) -> dict[str, Any]:
    raw = sim_config(simulator,
                     tgi={"targets": [{"provider": "tgi", "model": "tgi"}]},
                     llama={"targets": [{"provider": "aws",
                                         "model": "meta.llama3-70b-instruct-v1:0"}]},
                     claude={"targets": [{"provider": "aws", "model": CLAUDE}]})
    raw["providers"]["tgi"] = {"type": "huggingface", "api": "tgi",
                               "base_url": simulator + "/tgi", "api_key": "hf_token_0123456789"}
    raw["providers"]["aws"] = {"type": "bedrock", "region": "us-east-1",
                               "base_url": f"{simulator}/bedrock",
                               "access_key_id": TEST_ACCESS_KEY,
                               "secret_access_key": TEST_SECRET_KEY}
    return raw


def _events(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:]) for line in text.splitlines()
            if line.startswith("data: ") and line != "data: [DONE]"]


def _message(gw: RunningGateway, model: str, stops: list[str], *, stream: bool
             ) -> tuple[str, str | None]:
    """The stop reason and stop sequence of a ``/v1/messages`` answer (a stream's from its
    ``message_delta``)."""
    answer = gw.http().post("/v1/messages", json={
        "model": model, "max_tokens": 50, "messages": USER, "stop_sequences": stops,
        "stream": stream}, headers={"anthropic-version": "2023-06-01"})
    assert answer.status_code == 200
    if not stream:
        message = answer.json()
        return message["stop_reason"], message["stop_sequence"]
    (delta,) = [e["delta"] for e in _events(answer.text) if e["type"] == "message_delta"]
    return delta["stop_reason"], delta["stop_sequence"]


def _finish(gw: RunningGateway, path: str, body: dict[str, Any], *, stream: bool
            ) -> tuple[str, Any, str]:
    """The finish reason, ``stop_reason`` and text of an OpenAI-route answer's choice."""
    answer = httpx.post(gw.url + path, json={**body, "stream": stream}, timeout=10,
                        headers={"Authorization": f"Bearer {MASTER_KEY}"})
    assert answer.status_code == 200
    if not stream:
        choice = answer.json()["choices"][0]
        text = choice["text"] if "text" in choice else choice["message"]["content"]
        return choice["finish_reason"], choice.get("stop_reason"), text
    choices = [c for e in _events(answer.text) for c in e["choices"]]
    (last,) = [c for c in choices if c.get("finish_reason")]
    text = "".join(c.get("text") or (c.get("delta") or {}).get("content") or "" for c in choices)
    return last["finish_reason"], last.get("stop_reason"), text


@WHOLE_AND_STREAMED
def test_tgi_names_the_stop_sequence_its_text_ends_with(run_gateway: GatewayFactory,
                                                       simulator: str, stream: bool) -> None:
    """TGI's ``stop_sequence`` finish on ``/v1/messages`` is ``stop_sequence`` naming the one
    of the request's sequences its text ends with, with one stop sequence or several; an answer
    no sequence ended is ``end_turn``."""
    with run_gateway(_config(simulator)) as gw:
        assert _message(gw, "tgi", [SAID], stream=stream) == ("stop_sequence", SAID)
        assert _message(gw, "tgi", [NEVER, SAID], stream=stream) == ("stop_sequence", SAID)
        assert _message(gw, "tgi", [NEVER], stream=stream) == ("end_turn", None)


@WHOLE_AND_STREAMED
def test_tgi_names_the_stop_sequence_on_openai_routes(run_gateway: GatewayFactory,
                                                      simulator: str, stream: bool) -> None:
    """On ``/v1/chat/completions`` and ``/v1/completions`` (TGI's ``/generate``) the finish
    reason is ``stop`` and the choice's ``stop_reason`` names the sequence, which TGI's text
    keeps at its end."""
    with run_gateway(_config(simulator)) as gw:
        for path, body in (("/v1/chat/completions", {"messages": USER}),
                           ("/v1/completions", {"prompt": "Tell me about switchboards"})):
            finish, named, text = _finish(gw, path, {"model": "tgi", "max_tokens": 50,
                                                     "stop": [NEVER, SAID], **body},
                                          stream=stream)
            assert (finish, named) == ("stop", SAID), path
            assert text.endswith(SAID), path


@WHOLE_AND_STREAMED
def test_converse_stop_sequence_of_one_is_named(run_gateway: GatewayFactory, simulator: str,
                                                stream: bool) -> None:
    """Bedrock Converse's ``stop_sequence`` for a model whose response names none (Llama)
    names the request's one stop sequence in the choice's ``stop_reason``; with several,
    Converse does not say which (none), and an answer no sequence ended names none.
    (``/v1/messages`` reaches only Claude on Bedrock, natively.)"""
    with run_gateway(_config(simulator)) as gw:
        for stops, expected in (([SAID], SAID), ([SAID, NEVER], None), ([NEVER], None)):
            finish, named, _ = _finish(gw, "/v1/chat/completions", {
                "model": "llama", "max_tokens": 50, "messages": USER, "stop": stops},
                stream=stream)
            assert (finish, named) == ("stop", expected), stops


@WHOLE_AND_STREAMED
def test_converse_claude_names_its_stop_sequence(run_gateway: GatewayFactory, simulator: str,
                                                 stream: bool) -> None:
    """A request with stop sequences asks Converse for Claude's ``/stop_sequence``, which names
    the sequence that ended the answer among several (the choice's ``stop_reason``)."""
    with run_gateway(_config(simulator)) as gw:
        finish, named, _ = _finish(gw, "/v1/chat/completions", {
            "model": "claude", "max_tokens": 50, "messages": USER, "stop": [NEVER, SAID]},
            stream=stream)
    assert (finish, named) == ("stop", SAID)
    sent = httpx.get(simulator + "/_sim/requests?limit=1").json()[0]["body"]
    assert sent["additionalModelResponseFieldPaths"] == ["/stop_sequence"]
