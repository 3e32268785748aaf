"""Google's routes answer errors as Google's APIs do: each status with its google.rpc name, and
a client error Google has no status for (413, 422) as its 400 INVALID_ARGUMENT (the Gemini API
answers an oversized request "400 Request payload size exceeds the limit")."""

from __future__ import annotations

import httpx
import pytest

from app.simulator import vertex
from app.simulator.gemini import API_KEY

GEMINI = "/gemini/v1beta/models/gemini-2.5-flash:generateContent"
VERTEX = ("/vertex/v1/projects/p/locations/us-central1/publishers/google/models/"
          "gemini-2.5-flash:generateContent")
BODY = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


@pytest.mark.parametrize(("injected", "code", "status"), [
    (413, 400, "INVALID_ARGUMENT"), (422, 400, "INVALID_ARGUMENT"),
    (400, 400, "INVALID_ARGUMENT"), (404, 404, "NOT_FOUND"), (429, 429, "RESOURCE_EXHAUSTED"),
    (503, 503, "UNAVAILABLE")])
def test_injected_errors_answer_googles_status(http: httpx.Client, injected: int, code: int,
                                               status: str) -> None:
    """X-Return-Error on the Gemini API and Vertex AI: the HTTP status and the body's code and
    status are a pair Google answers."""
    token = vertex.issue("gw@p.iam.gserviceaccount.com", lifetime_s=60)
    for path, auth in ((GEMINI, {"x-goog-api-key": API_KEY}),
                       (VERTEX, {"Authorization": f"Bearer {token}"})):
        answer = http.post(path, json=BODY, headers={**auth, "X-Return-Error": str(injected)})
        assert answer.status_code == code, (path, answer.text)
        error = answer.json()["error"]
        assert (error["code"], error["status"]) == (code, status), path
