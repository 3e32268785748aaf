"""The simulator's one tool rule (``app.simulator.tools``) in each dialect's own wire format:
offered tools are called when the model decides (Cohere's and Bedrock's default, Gemini's
AUTO), to the tool matching the question, unless the last turn is a tool result or the choice
is none; the forced choices pick by the same match. Anthropic's is pinned in
``test_anthropic.py``."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from app.providers.aws_eventstream import EventStreamDecoder
from app.simulator.aws_auth import BEDROCK_API_KEY
from app.simulator.gemini import API_KEY

QUESTION = "What is the weather in Paris today?"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
LOOKUP_SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}}
COHERE_TOOLS = [
    {"type": "function", "function": {"name": "lookup", "description": "Look a word up",
                                      "parameters": LOOKUP_SCHEMA}},
    {"type": "function", "function": {"name": "get_weather", "description": "Weather forecast",
                                      "parameters": SCHEMA}}]
GEMINI_TOOLS = [{"functionDeclarations": [
    {"name": "lookup", "description": "Look a word up", "parametersJsonSchema": LOOKUP_SCHEMA},
    {"name": "get_weather", "description": "Weather forecast", "parametersJsonSchema": SCHEMA}]}]
BEDROCK_TOOLS = [
    {"toolSpec": {"name": "lookup", "description": "Look a word up",
                  "inputSchema": {"json": LOOKUP_SCHEMA}}},
    {"toolSpec": {"name": "get_weather", "description": "Weather forecast",
                  "inputSchema": {"json": SCHEMA}}}]
COHERE = {"Authorization": "Bearer co-key"}
GEMINI = "/gemini/v1beta/models/gemini-2.5-flash:"
BEDROCK = "/bedrock/model/anthropic.claude-3-5-haiku-20241022-v1:0/"
AWS = {"Authorization": f"Bearer {BEDROCK_API_KEY}"}


def cohere(http: httpx.Client, messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    answer = http.post("/v2/chat", headers=COHERE, json={
        "model": "command-r", "messages": messages, "tools": COHERE_TOOLS, **extra})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_cohere_calls_the_matching_tool_unless_told_not_to(http: httpx.Client) -> None:
    """Cohere v2: no tool_choice or REQUIRED answers message.tool_calls to the matching tool
    with finish_reason TOOL_CALL (streamed as tool-call events); NONE, or a last tool message,
    answers text."""
    user = [{"role": "user", "content": QUESTION}]
    for extra in ({}, {"tool_choice": "REQUIRED"}):
        body = cohere(http, user, **extra)
        assert body["finish_reason"] == "TOOL_CALL"
        (call,) = body["message"]["tool_calls"]
        assert call["type"] == "function" and call["id"]
        assert call["function"]["name"] == "get_weather"
        assert orjson.loads(call["function"]["arguments"]) == {"city": ""}
        assert body["message"]["tool_plan"] and "content" not in body["message"]
    assert cohere(http, user, tool_choice="NONE")["finish_reason"] == "COMPLETE"
    answered: list[dict[str, Any]] = [*user, {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "Sunny"}]
    after = cohere(http, answered)
    assert after["finish_reason"] == "COMPLETE" and after["message"]["content"][0]["text"]
    stream = http.post("/v2/chat", headers=COHERE, json={
        "model": "command-r", "messages": user, "tools": COHERE_TOOLS, "stream": True})
    events = [orjson.loads(line[6:]) for line in stream.text.splitlines()
              if line.startswith("data: ")]
    start = next(e for e in events if e["type"] == "tool-call-start")
    assert start["delta"]["message"]["tool_calls"]["function"]["name"] == "get_weather"
    assert events[-1]["delta"]["finish_reason"] == "TOOL_CALL"


def gemini(http: httpx.Client, contents: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    answer = http.post(GEMINI + "generateContent", headers={"x-goog-api-key": API_KEY},
                       json={"contents": contents, "tools": GEMINI_TOOLS, **extra})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_gemini_calls_the_matching_function_unless_told_not_to(http: httpx.Client) -> None:
    """Gemini: with declarations and no toolConfig (AUTO), or ANY, the candidate is a
    functionCall part for the matching function (ANY among allowedFunctionNames), streamed
    too; NONE, or a last turn of function responses, answers text."""
    user = [{"role": "user", "parts": [{"text": QUESTION}]}]
    for extra in ({}, {"toolConfig": {"functionCallingConfig": {"mode": "AUTO"}}},
                  {"toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}):
        (candidate,) = gemini(http, user, **extra)["candidates"]
        assert candidate["content"]["parts"] == [
            {"functionCall": {"name": "get_weather", "args": {"city": ""}}}]
        assert candidate["finishReason"] == "STOP"
    allowed = {"toolConfig": {"functionCallingConfig": {
        "mode": "ANY", "allowedFunctionNames": ["lookup"]}}}
    (call,) = gemini(http, user, **allowed)["candidates"][0]["content"]["parts"]
    assert call["functionCall"]["name"] == "lookup"
    none = {"toolConfig": {"functionCallingConfig": {"mode": "NONE"}}}
    assert "text" in gemini(http, user, **none)["candidates"][0]["content"]["parts"][0]
    answered = [*user, {"role": "model", "parts": [{"functionCall": {
        "name": "get_weather", "args": {"city": "Paris"}}}]},
        {"role": "user", "parts": [{"functionResponse": {
            "name": "get_weather", "response": {"forecast": "Sunny"}}}]}]
    assert "text" in gemini(http, answered)["candidates"][0]["content"]["parts"][0]
    stream = http.post(GEMINI + "streamGenerateContent?alt=sse",
                       headers={"x-goog-api-key": API_KEY},
                       json={"contents": user, "tools": GEMINI_TOOLS})
    frames = [orjson.loads(line[6:]) for line in stream.text.splitlines()
              if line.startswith("data: ")]
    parts = [p for f in frames for c in f["candidates"] for p in c["content"]["parts"]]
    assert {"functionCall": {"name": "get_weather", "args": {"city": ""}}} in parts


def converse(http: httpx.Client, messages: list[dict[str, Any]], **config: Any) -> Any:
    return http.post(BEDROCK + "converse", headers=AWS, json={
        "messages": messages, "toolConfig": {"tools": BEDROCK_TOOLS, **config}})


def test_bedrock_converse_calls_the_matching_tool_unless_it_has_the_result(
        http: httpx.Client) -> None:
    """Converse: with tools and no toolChoice, auto or any, the message is a toolUse block
    for the matching tool with stopReason tool_use (streamed as contentBlockStart and toolUse
    deltas); a last message carrying a toolResult answers text."""
    user = [{"role": "user", "content": [{"text": QUESTION}]}]
    configs: list[dict[str, Any]] = [{}, {"toolChoice": {"auto": {}}},
                                     {"toolChoice": {"any": {}}}]
    for config in configs:
        body = converse(http, user, **config).json()
        assert body["stopReason"] == "tool_use"
        (block,) = body["output"]["message"]["content"]
        assert block["toolUse"]["name"] == "get_weather"
        assert block["toolUse"]["input"] == {"city": ""} and block["toolUse"]["toolUseId"]
    answered = [*user, {"role": "assistant", "content": [{"toolUse": {
        "toolUseId": "t1", "name": "get_weather", "input": {"city": "Paris"}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "t1",
                                                     "content": [{"text": "Sunny"}]}}]}]
    after = converse(http, answered).json()
    assert after["stopReason"] == "end_turn"
    assert after["output"]["message"]["content"][0]["text"]
    raw = http.post(BEDROCK + "converse-stream", headers=AWS, json={
        "messages": user, "toolConfig": {"tools": BEDROCK_TOOLS}})
    events = {m.event_type: orjson.loads(m.payload)
              for m in EventStreamDecoder().feed(raw.content)}
    assert events["contentBlockStart"]["start"]["toolUse"]["name"] == "get_weather"
    assert events["messageStop"]["stopReason"] == "tool_use"


def test_bedrock_invoke_claude_tool_use_cut_by_max_tokens(http: httpx.Client) -> None:
    """InvokeModel with Claude's body: a tool_use cut by max_tokens answers an empty input with
    stop_reason max_tokens (its arguments are no whole JSON), not a server error."""
    answer = http.post(BEDROCK + "invoke", headers=AWS, json={
        "anthropic_version": "bedrock-2023-05-31", "max_tokens": 2,
        "messages": [{"role": "user", "content": QUESTION}],
        "tools": [{"name": "get_weather", "input_schema": SCHEMA}]})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["stop_reason"] == "max_tokens"
    assert body["content"][0]["type"] == "tool_use" and body["content"][0]["input"] == {}
