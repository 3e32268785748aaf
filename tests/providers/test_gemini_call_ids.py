"""Parallel tool results on Gemini and Vertex targets: Gemini's call ids go back on the Gemini
API (never to Vertex, which refuses the field), and each turn's function responses follow the
order of the calls they answer, through a running gateway against the simulator."""

# The gateway fixture lives in tests/api/conftest.py, outside this directory: imported here so
# pytest finds it, and then named by each test's parameter (which ruff reads as a redefinition).
# ruff: noqa: F811

from __future__ import annotations

from typing import Any

from app.providers.base import ChatCall, Target
from app.providers.gemini_request import translate_request
from app.schemas import ChatRequest
from tests.api.conftest import (  # noqa: F401 - run_gateway is a fixture, used by name
    GatewayFactory,
    run_gateway,
)
from tests.providers.test_gemini_gateway import (  # noqa: F401 - a fixture, used by name
    config,
    last_request,
    service_account_key,
)

WEATHER: Any = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
ASK: Any = {"role": "user", "content": "get_weather in Paris and London"}


def _history(first: Any, second_id: str) -> list[Any]:
    """The model's first call (as the gateway returned it) and a second call of the same
    function, answered London first, then Paris."""
    paris = {**first, "function": {"name": "get_weather", "arguments": '{"city": ""}'}}
    london = {"id": second_id, "type": "function",
              "function": {"name": "get_weather", "arguments": '{"city": "London"}'}}
    return [ASK, {"role": "assistant", "content": None, "tool_calls": [paris, london]},
            {"role": "tool", "tool_call_id": second_id, "content": "sunny, 21C"},
            {"role": "tool", "tool_call_id": first["id"], "content": "rain, 12C"}]


def test_gemini_3_call_ids_go_back_and_responses_follow_the_calls(
        run_gateway: GatewayFactory, simulator: str, service_account_key: str) -> None:
    """On the Gemini API, a Gemini 3 call's id becomes the tool call's id and goes back on its
    functionCall and functionResponse; results sent in another order travel in call order."""
    raw = config(simulator, "gemini", service_account_key, model="gemini-3-flash-preview")
    with run_gateway(raw) as gw:
        client = gw.client()
        reply = client.chat.completions.create(model="chat", messages=[ASK], tools=[WEATHER],
                                               tool_choice="required")
        (first,) = reply.choices[0].message.tool_calls or []
        assert first.id.startswith("fc-")  # the simulator's Gemini 3 id, kept
        client.chat.completions.create(
            model="chat", messages=_history(first.model_dump(exclude_none=True), "fc-london"),
            tools=[WEATHER])
        model_turn, answers = last_request(simulator)["body"]["contents"][1:]
    assert [p["functionCall"].get("id") for p in model_turn["parts"]] == [first.id, "fc-london"]
    assert [p["functionResponse"] for p in answers["parts"]] == [
        {"id": first.id, "name": "get_weather", "response": {"output": "rain, 12C"}},
        {"id": "fc-london", "name": "get_weather", "response": {"output": "sunny, 21C"}}]


def test_vertex_gets_no_call_ids_and_responses_in_call_order(
        run_gateway: GatewayFactory, simulator: str, service_account_key: str) -> None:
    """On Vertex (whose v1 API refuses ``id``) no call id is sent, not even a client's own, and
    the responses go in the order of the calls, the only pairing Gemini then has."""
    raw = config(simulator, "vertex", service_account_key, model="gemini-3-flash-preview")
    with run_gateway(raw) as gw:
        client = gw.client()
        reply = client.chat.completions.create(model="chat", messages=[ASK], tools=[WEATHER],
                                               tool_choice="required")
        (first,) = reply.choices[0].message.tool_calls or []
        client.chat.completions.create(
            model="chat", messages=_history(first.model_dump(exclude_none=True), "toolu_01"),
            tools=[WEATHER])
        model_turn, answers = last_request(simulator)["body"]["contents"][1:]
    assert [p["functionCall"] for p in model_turn["parts"]] == [
        {"name": "get_weather", "args": {"city": ""}},
        {"name": "get_weather", "args": {"city": "London"}}]
    assert [p["functionResponse"]["response"] for p in answers["parts"]] == [
        {"output": "rain, 12C"}, {"output": "sunny, 21C"}]


def test_made_up_ids_stay_home_and_results_are_reordered() -> None:
    """An id the gateway made up (Gemini 2.x gives none) is not sent even to the Gemini API;
    results answering calls out of order are put back in call order, one turn."""
    made_up = "call_" + "ab" * 12
    body = {"model": "m", "messages": [
        ASK, {"role": "assistant", "tool_calls": [
            {"id": made_up, "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_2", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "London"}'}}]},
        {"role": "tool", "tool_call_id": "call_2", "content": '{"sky": "sunny"}'},
        {"role": "tool", "tool_call_id": made_up, "content": "rain"},
        {"role": "user", "content": "and so?"}]}
    call = ChatCall(request=ChatRequest.model_validate(body), body=body)
    contents = translate_request(call, target=Target(provider="g", model="gemini-2.5-flash"),
                                 echo_ids=True)["contents"]
    assert contents[1]["parts"][0]["functionCall"] == {"name": "get_weather",
                                                       "args": {"city": "Paris"}}
    assert contents[1]["parts"][1]["functionCall"]["id"] == "call_2"
    assert contents[2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_weather", "response": {"output": "rain"}}},
        {"functionResponse": {"id": "call_2", "name": "get_weather",
                              "response": {"sky": "sunny"}}},
        {"text": "and so?"}]}
