"""The simulator's Google function call ids: Gemini 3 gives its calls one on the Gemini API,
Vertex's v1 refuses the field, and a response id naming no call of the turn before is a 400."""

from __future__ import annotations

from typing import Any

import httpx

from app.simulator.gemini import API_KEY
from app.simulator.vertex import issue

TOOLS = [{"functionDeclarations": [{"name": "get_weather"}]}]
CALLED: Any = [{"role": "user", "parts": [{"text": "weather?"}]},
               {"role": "model", "parts": [{"functionCall": {"id": "fc-1", "name": "get_weather",
                                                             "args": {}}}]}]


def _answer(response_id: str) -> Any:
    return {"role": "user", "parts": [{"functionResponse": {
        "id": response_id, "name": "get_weather", "response": {"output": "rain"}}}]}


def test_gemini_3_calls_carry_an_id(http: httpx.Client) -> None:
    """A Gemini 3 function call on the Gemini API has an ``id``; a Gemini 2.5 one has none."""
    for model, has_id in (("gemini-3-flash-preview", True), ("gemini-2.5-flash", False)):
        reply = http.post(f"/gemini/v1beta/models/{model}:generateContent",
                          headers={"x-goog-api-key": API_KEY},
                          json={"contents": CALLED[:1], "tools": TOOLS,
                                "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}})
        call = reply.json()["candidates"][0]["content"]["parts"][0]["functionCall"]
        assert ("id" in call) is has_id


def test_gemini_response_id_must_name_a_call(http: httpx.Client) -> None:
    """A functionResponse id matching the previous turn's call is taken; another is a 400."""
    url = "/gemini/v1beta/models/gemini-2.5-flash:generateContent"
    headers = {"x-goog-api-key": API_KEY}
    good = http.post(url, headers=headers, json={"contents": [*CALLED, _answer("fc-1")]})
    assert good.status_code == 200
    bad = http.post(url, headers=headers, json={"contents": [*CALLED, _answer("fc-2")]})
    assert bad.status_code == 400
    assert "functionResponse.id" in bad.json()["error"]["message"]


def test_vertex_refuses_call_ids(http: httpx.Client) -> None:
    """Vertex's v1 has no FunctionCall/FunctionResponse id: Google's unknown-field 400."""
    url = ("/vertex/v1/projects/p/locations/us-central1/publishers/google/models/"
           "gemini-2.5-flash:generateContent")
    headers = {"authorization": "Bearer " + issue("t", lifetime_s=600)}
    reply = http.post(url, headers=headers, json={"contents": [*CALLED, _answer("fc-1")]})
    assert reply.status_code == 400
    assert 'Unknown name "id"' in reply.json()["error"]["message"]
