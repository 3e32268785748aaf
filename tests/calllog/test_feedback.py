"""Feedback on calls (``POST /v1/feedback``) through a running gateway with its call log on
SQLite: stored and read back, several per call, by call id or the client's request id; bad
input a 400, an unknown call a 404."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from tests.api.conftest import MASTER_KEY
from tests.calllog.test_end_to_end import chat, logged_gateway, settings_for


def test_feedback_is_stored_many_per_call_and_read_back(simulator: str,
                                                        tmp_path: Path) -> None:
    settings = settings_for(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}", None)
    with logged_gateway(settings, simulator) as (url, _), \
            httpx.Client(base_url=url, timeout=30,
                         headers={"Authorization": f"Bearer {MASTER_KEY}"}) as http:
        client = openai.OpenAI(base_url=url + "/v1", api_key=MASTER_KEY, max_retries=0)
        answer = chat(client, "ticket-42")
        call_id = answer.headers["x-switchboard-call-id"]
        client.close()
        first = http.post("/v1/feedback", json={"request_id": call_id, "score": 0.9,
                                                "label": "helpful"})
        assert first.status_code == 201, first.text
        second = http.post("/v1/feedback", json={"request_id": "ticket-42", "score": -1,
                                                 "comment": "wrong date"})
        assert second.status_code == 201 and second.json()["call_id"] == call_id
        stored = http.get(f"/admin/calls/{call_id}/feedback").json()["data"]
        assert [(f["score"], f["label"], f["comment"]) for f in stored] == [
            (0.9, "helpful", None), (-1.0, None, "wrong date")]
        unknown = http.post("/v1/feedback", json={"request_id": "no-such-call", "score": 1})
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "call_not_found"


@pytest.mark.parametrize("body", [
    {"request_id": "x"},  # nothing to say
    {"request_id": "", "score": 1},
    {"request_id": "x", "score": "high"},
    {"request_id": "x", "label": "l" * 129},
    {"request_id": "x", "comment": "bad\u0000"},
    {"request_id": "x", "score": 1, "extra": True},
])
def test_bad_feedback_is_a_400(simulator: str, tmp_path: Path, body: dict[str, object]) -> None:
    settings = settings_for(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}", None)
    with logged_gateway(settings, simulator) as (url, _):
        answer = httpx.post(f"{url}/v1/feedback", json=body,
                            headers={"Authorization": f"Bearer {MASTER_KEY}"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["type"] == "invalid_request_error"
