"""Gemini 3's thought signatures through a running gateway: the openai SDK's two-turn tool call
against a ``gemini-3`` model of the simulator, which refuses the second turn unless the first
turn's signature came back on its function call (streamed and not, Gemini API and Vertex AI).
The simulator's signed answers parse as google-genai's types."""

# The gateway fixture lives in tests/api/conftest.py, outside this directory: imported here so
# pytest finds it, and then named by each test's parameter (which ruff reads as a redefinition).
# ruff: noqa: F811

from __future__ import annotations

from typing import Any

import httpx
import openai
import orjson
import pytest
from google.genai import types
from openai.types.chat import ChatCompletionMessageParam

from app.simulator.gemini import API_KEY
from tests.api.conftest import (  # noqa: F401 - run_gateway is a fixture, used by name
    GatewayFactory,
    run_gateway,
)
from tests.providers.test_gemini_gateway import (  # noqa: F401 - a fixture, used by name
    KINDS,
    LOOKUP,
    USER,
    config,
    last_request,
    service_account_key,
)

MODEL = "gemini-3-flash-preview"


def signature(extra: dict[str, Any] | None) -> str:
    """The thought signature in an OpenAI object's ``extra_content`` (fails when absent)."""
    value = (extra or {})["extra_content"]["google"]["thought_signature"]
    assert isinstance(value, str) and value
    return value


def answer_turn(call_id: str) -> ChatCompletionMessageParam:
    return {"role": "tool", "tool_call_id": call_id, "content": '{"meaning": "a board"}'}


@KINDS
def test_two_turn_tool_call_round_trips_the_signature(
    run_gateway: GatewayFactory, simulator: str, service_account_key: str, kind: str
) -> None:
    """The tool call carries Gemini's signature; the assistant message sent back as the SDK
    returned it puts the signature on its functionCall part, so Gemini 3 answers the second
    turn, whose text signature goes back on its text part in a third; without the signature
    the second turn is Google's 400, relayed."""
    with run_gateway(config(simulator, kind, service_account_key, model=MODEL)) as gw:
        client = gw.client()
        first = client.chat.completions.create(model="chat", messages=USER, tools=[LOOKUP],
                                               tool_choice="required")
        message = first.choices[0].message
        (call,) = message.tool_calls or []
        signed = signature(call.model_extra)
        # The SDK's own message object goes back as returned: it serializes extra_content.
        history: list[Any] = [*USER, message, answer_turn(call.id)]
        second = client.chat.completions.create(model="chat", messages=history,
                                                tools=[LOOKUP])
        assert second.choices[0].message.content
        sent = last_request(simulator)["body"]["contents"]
        assert sent[1]["parts"][0]["thoughtSignature"] == signed
        text_signature = signature(second.choices[0].message.model_extra)
        third: list[Any] = [*history, second.choices[0].message,
                            {"role": "user", "content": "And tides?"}]
        client.chat.completions.create(model="chat", tools=[LOOKUP], messages=third)
        sent = last_request(simulator)["body"]["contents"]
        assert sent[3]["parts"][-1]["thoughtSignature"] == text_signature
        unsigned: Any = message.model_dump(exclude_none=True)
        del unsigned["tool_calls"][0]["extra_content"]
        with pytest.raises(openai.BadRequestError) as raised:
            client.chat.completions.create(model="chat", tools=[LOOKUP], messages=[
                *USER, unsigned, answer_turn(call.id)])
        assert "missing a thought_signature" in raised.value.message


@KINDS
def test_streamed_two_turn_tool_call_round_trips_the_signature(
    run_gateway: GatewayFactory, simulator: str, service_account_key: str, kind: str
) -> None:
    """Streamed: the tool call's delta carries the signature and the answer's text signature
    comes as an extra_content delta; an assistant message rebuilt from the deltas makes the
    streamed second turn succeed."""
    with run_gateway(config(simulator, kind, service_account_key, model=MODEL)) as gw:
        client = gw.client()
        chunks = list(client.chat.completions.create(
            model="chat", messages=USER, tools=[LOOKUP], tool_choice="required", stream=True))
        deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or ()]
        (delta,) = deltas
        assert delta.id and delta.function and delta.function.name == "lookup"
        message: Any = {
            "role": "assistant", "content": None, "tool_calls": [{
                "id": delta.id, "type": "function",
                "function": {"name": "lookup", "arguments": delta.function.arguments or ""},
                "extra_content": {"google": {"thought_signature":
                                             signature(delta.model_extra)}},
            }]}
        second = list(client.chat.completions.create(
            model="chat", messages=[*USER, message, answer_turn(delta.id)], tools=[LOOKUP],
            stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in second if c.choices)
        assert text.startswith("Simulated reply")
        extras = [signature(c.choices[0].delta.model_extra) for c in second
                  if c.choices and "extra_content" in (c.choices[0].delta.model_extra or {})]
        assert len(extras) == 1
        assert second[-1].choices[0].finish_reason == "stop"


def test_signed_answers_parse_as_sdk_types(simulator: str) -> None:
    """A gemini-3 answer's signatures (on the call; on the last text part; on a stream's final
    empty part) are valid bytes fields for google-genai's GenerateContentResponse."""
    url = f"{simulator}/gemini/v1beta/models/{MODEL}"
    headers = {"x-goog-api-key": API_KEY}
    tool = {"contents": [{"parts": [{"text": "hi"}]}],
            "tools": [{"functionDeclarations": [{"name": "f"}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}
    text = {"contents": [{"parts": [{"text": "hi"}]}]}
    for body in (tool, text):
        answer = types.GenerateContentResponse.model_validate(
            httpx.post(url + ":generateContent", json=body, headers=headers).json())
        assert answer.candidates and answer.candidates[0].content
        parts = answer.candidates[0].content.parts or []
        assert parts[-1].thought_signature
    frames = httpx.post(url + ":streamGenerateContent?alt=sse", json=text,
                        headers=headers).text.split("\r\n\r\n")
    last = types.GenerateContentResponse.model_validate(
        orjson.loads([f for f in frames if f][-1].removeprefix("data: ")))
    assert last.candidates and last.candidates[0].content
    (closing,) = last.candidates[0].content.parts or []
    assert closing.text == "" and closing.thought_signature


def test_simulator_refuses_missing_or_altered_signatures(simulator: str) -> None:
    """Only the current turn's first call in each step must be signed; an altered signature
    anywhere is Google's "Corrupted thought signature."; gemini-2.5 checks nothing."""
    headers = {"x-goog-api-key": API_KEY}
    signed = httpx.post(f"{simulator}/gemini/v1beta/models/{MODEL}:generateContent", json={
        "contents": [{"parts": [{"text": "hi"}]}],
        "tools": [{"functionDeclarations": [{"name": "f"}]}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}, headers=headers).json()
    call = signed["candidates"][0]["content"]["parts"][0]
    bare = {"functionCall": call["functionCall"]}
    result = {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}

    def status(model: str, *turns: Any) -> tuple[int, str]:
        answer = httpx.post(f"{simulator}/gemini/v1beta/models/{model}:generateContent",
                            json={"contents": [{"parts": [{"text": "hi"}]}, *turns]},
                            headers=headers)
        return answer.status_code, answer.text

    assert status(MODEL, {"role": "model", "parts": [call]}, result)[0] == 200
    code, text = status(MODEL, {"role": "model", "parts": [bare]}, result)
    assert code == 400 and "function call `default_api:f` , position 2" in text
    assert status(MODEL, {"role": "model", "parts": [bare]}, result,
                  {"role": "user", "parts": [{"text": "next"}]})[0] == 200
    altered = {**call, "thoughtSignature": "c2lnbmVk"}
    code, text = status(MODEL, {"role": "model", "parts": [altered]}, result)
    assert code == 400 and "Corrupted thought signature." in text
    assert status("gemini-2.5-flash", {"role": "model", "parts": [bare]}, result)[0] == 200
