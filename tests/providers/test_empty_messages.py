# ruff: noqa: F811  (pytest passes the imported run_gateway fixture by parameter name)
"""Empty messages on upstreams that refuse them (Anthropic, Vertex's Claude, Bedrock Converse,
Gemini): a trailing empty user message is a 400 naming it, never silently left out (which turned
the assistant's last turn into a prefill); other empty messages are left out, as before, so a
conversation an OpenAI-type target serves is served here too (a fallback between them)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from app import errors
from app.providers import anthropic_request, bedrock_converse, gemini_request
from app.providers.base import ChatCall, Json, Target
from app.schemas import ChatRequest
from tests.api.conftest import (  # noqa: F401  (run_gateway: the fixture, used by name)
    GatewayFactory,
    run_gateway,
    sim_config,
)

Translate = Callable[[list[Json]], list[Json]]


def _call(messages: list[Json]) -> ChatCall:
    body: Json = {"model": "m", "messages": messages}
    return ChatCall(request=ChatRequest.model_validate(body), body=body)


def _anthropic(messages: list[Json]) -> list[Json]:
    payload = anthropic_request.translate_request(
        _call(messages), target=Target(provider="p", model="claude-sonnet-4-5"),
        max_tokens_default=64, stream=False)
    turns: list[Json] = payload["messages"]
    return turns


def _bedrock(messages: list[Json]) -> list[Json]:
    payload = bedrock_converse.translate_request(
        _call(messages), target=Target(provider="p", model="anthropic.claude-3-5-haiku"),
        max_tokens_default=None)
    turns: list[Json] = payload["messages"]
    return turns


def _gemini(messages: list[Json]) -> list[Json]:
    payload = gemini_request.translate_request(
        _call(messages), target=Target(provider="p", model="gemini-2.5-flash"))
    turns: list[Json] = payload["contents"]
    return turns


TRANSLATORS = pytest.mark.parametrize("translate", [_anthropic, _bedrock, _gemini],
                                      ids=["anthropic", "bedrock", "gemini"])
ASKED = {"role": "user", "content": "what is the weather in Paris"}
SAID = {"role": "assistant", "content": "It is sunny"}


def refusal(translate: Translate, messages: list[Json]) -> errors.InvalidRequest:
    with pytest.raises(errors.InvalidRequest) as raised:
        translate(messages)
    return raised.value


@TRANSLATORS
def test_trailing_empty_user_message_is_a_400_not_a_prefill(translate: Translate) -> None:
    """An empty user message after an assistant turn is a 400 naming its content."""
    err = refusal(translate, [ASKED, SAID, {"role": "user", "content": ""}])
    assert err.param == "messages[2].content" and "empty last message" in err.message


@TRANSLATORS
def test_only_empty_user_message_is_a_400_naming_it(translate: Translate) -> None:
    """A system message and an empty user message: a 400 naming the user message."""
    err = refusal(translate, [{"role": "system", "content": "Be brief."},
                              {"role": "user", "content": [{"type": "text", "text": ""}]}])
    assert err.param == "messages[1].content"


@TRANSLATORS
def test_empty_assistant_message_between_user_turns_is_left_out(translate: Translate) -> None:
    """An empty assistant message between two user messages is left out and the two join in
    one turn (OpenAI-type targets serve the conversation; a 400 here ended a fallback)."""
    turns = translate([{"role": "assistant", "content": ""}, ASKED,
                       {"role": "assistant", "content": ""},
                       {"role": "user", "content": "and in Rome?"}])
    assert len(turns) == 1 and turns[0]["role"] == "user"
    assert "Rome" in str(turns[0]) and "Paris" in str(turns[0])


@TRANSLATORS
def test_empty_message_beside_one_of_its_role_joins_its_turn(translate: Translate) -> None:
    """An empty message next to a non-empty one of its role changes no turn: it goes through."""
    turns = translate([{"role": "user", "content": ""}, ASKED, SAID,
                       {"role": "assistant", "content": ""},
                       {"role": "user", "content": "and in Rome?"}])
    assert [t["role"] for t in turns] in (["user", "assistant", "user"], ["user", "model", "user"])


@TRANSLATORS
def test_empty_last_assistant_message_is_left_out(translate: Translate) -> None:
    """An empty last assistant message prefills nothing: the conversation ends on the user."""
    turns = translate([ASKED, {"role": "assistant", "content": ""}])
    assert [t["role"] for t in turns] == ["user"]


@TRANSLATORS
def test_empty_tool_result_goes_through(translate: Translate) -> None:
    """A tool's empty result is still a turn (the upstreams take an empty result)."""
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    turns = translate([ASKED, {"role": "assistant", "content": None, "tool_calls": [call]},
                       {"role": "tool", "tool_call_id": "c1", "content": ""}])
    assert len(turns) == 3 and turns[-1]["role"] == "user"


def test_gateway_answers_400_and_sends_nothing(run_gateway: GatewayFactory,
                                               simulator: str) -> None:
    """Through the gateway, a trailing empty user message for a Claude target is an
    OpenAI-shaped 400 and no request reaches the upstream."""
    raw = sim_config(simulator, claude={"targets": [{"provider": "claude",
                                                     "model": "claude-sonnet-4-5"}]})
    raw["providers"]["claude"] = {"type": "anthropic", "base_url": simulator,
                                  "api_key": "sk-ant-secret"}

    def sent() -> int:
        count: int = httpx.get(f"{simulator}/_sim/stats").json()["requests"].get(
            "/v1/messages", 0)
        return count

    before = sent()
    with run_gateway(raw) as gw:
        answer = gw.http().post("/v1/chat/completions", json={
            "model": "claude", "messages": [ASKED, SAID, {"role": "user", "content": ""}]})
    assert answer.status_code == 400
    error: dict[str, Any] = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "messages[2].content"
    assert sent() == before
