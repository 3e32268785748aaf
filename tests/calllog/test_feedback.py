"""Feedback on calls (``POST /v1/feedback``) through a running gateway with its call log on
SQLite: stored and read back, several per call, by call id or the client's request id; bad
input a 400, an unknown call a 404."""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from app.config import parse_config
from app.main import create_app
from app.simulator.app import create_app as create_sim
from app.simulator.options import SimOptions
from tests.api.conftest import MASTER_KEY, sim_config
from tests.calllog.test_end_to_end import chat, logged_gateway, settings_for
from tests.servers import serve


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
        assert stored == [first.json(), second.json()]  # read back as the POST answered
        # times as the call log writes them: UTC ISO 8601 ending in Z, read back as written
        row_time = http.get(f"/admin/calls/{call_id}").json()["created_at"]
        assert row_time.endswith("Z")
        assert [f["created_at"] for f in stored] == [first.json()["created_at"],
                                                     second.json()["created_at"]]
        assert all(f["created_at"].endswith("Z") and len(f["created_at"]) == len(row_time)
                   for f in stored)
        unknown = http.post("/v1/feedback", json={"request_id": "no-such-call", "score": 1})
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "call_not_found"
        unread = http.get("/admin/calls/no-such-call/feedback")
        assert unread.status_code == 404, unread.text
        assert unread.json()["error"]["code"] == "call_not_found"
        assert http.get("/admin/calls/no-such-call").json()["error"]["code"] == "call_not_found"
        # an id longer than any call's is refused, as by /admin/calls/{id}: cut to its first
        # 128 characters, it read the feedback of the call those named
        too_long = http.get(f"/admin/calls/{call_id + 'x' * 128}/feedback")
        assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "call_id"


@pytest.mark.parametrize("body", [
    {"request_id": "x"},  # nothing to say
    {"request_id": "", "score": 1},
    {"request_id": "x", "score": "high"},
    {"request_id": "x", "label": "l" * 129},
    {"request_id": "x", "comment": "bad\u0000"},
    {"request_id": "x", "score": 1, "extra": True},
    {"request_id": "x", "score": 1e308},  # two of them overflowed the experiment report
    {"request_id": "x", "score": True},  # not a number, though Python counts it as one
    {"request_id": "x", "score": "5"},
    {"request_id": "x", "score": -1_000_001},
    {"request_id": "x", "comment": ""},  # nothing said: it was stored as an empty feedback
    {"request_id": "x\u0000y", "score": 1},  # the database's error named no field
    {"request_id": "x", "label": "a\u0000b"},
])
def test_bad_feedback_is_a_400(simulator: str, tmp_path: Path, body: dict[str, object]) -> None:
    settings = settings_for(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}", None)
    with logged_gateway(settings, simulator) as (url, _):
        answer = httpx.post(f"{url}/v1/feedback", json=body,
                            headers={"Authorization": f"Bearer {MASTER_KEY}"})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error"
    nul = [name for name, value in body.items() if isinstance(value, str) and "\x00" in value]
    if nul:  # named, in the gateway's words
        assert error["param"] == nul[0] and "NUL" in error["message"], error


def test_a_key_gives_feedback_only_on_its_own_calls(simulator: str, tmp_path: Path) -> None:
    """Another virtual key's call is a 404 to a key, by call id and by request id, as an
    unknown call is; the key that made it, an admin key and the master key may score it."""
    settings = settings_for(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}", None)
    with logged_gateway(settings, simulator) as (url, _), \
            httpx.Client(base_url=url, timeout=30,
                         headers={"Authorization": f"Bearer {MASTER_KEY}"}) as master:
        owner, other, admin = (master.post("/admin/keys", json=spec).json()["key"] for spec in (
            {"name": "owner"}, {"name": "other", "models": ["embed"]},
            {"name": "ops", "admin": True}))
        client = openai.OpenAI(base_url=url + "/v1", api_key=owner, max_retries=0)
        call_id = chat(client, "owner-ticket").headers["x-switchboard-call-id"]
        client.close()

        def post(key: str, request_id: str) -> httpx.Response:
            return httpx.post(f"{url}/v1/feedback", timeout=30,
                              headers={"Authorization": f"Bearer {key}"},
                              json={"request_id": request_id, "score": 0})

        for request_id in (call_id, "owner-ticket"):
            refused = post(other, request_id)
            assert refused.status_code == 404, refused.text
            assert refused.json()["error"]["code"] == "call_not_found"
        assert [post(key, call_id).status_code for key in (owner, admin, MASTER_KEY)] == [
            201, 201, 201]
        assert post(owner, "owner-ticket").json()["call_id"] == call_id
        assert len(master.get(f"/admin/calls/{call_id}/feedback").json()["data"]) == 4


def test_a_report_survives_scores_stored_past_the_bound(simulator: str, tmp_path: Path) -> None:
    """Scores an older gateway stored unbounded (1e308, whose sum overflows) are left out of
    the report, which answers with the scores in range."""
    raw = sim_config(simulator)
    raw["experiments"] = {"sh": {"model": "chat", "variants": {
        name: {"targets": [{"provider": "sim", "model": "gpt-4o-mini"}]} for name in "ab"}}}
    database = tmp_path / "calls.db"
    settings = settings_for(tmp_path, f"sqlite+aiosqlite:///{database}", None)
    lane = create_app(settings, config=parse_config(raw, {}), strict_telemetry=True)
    with serve(lane) as url, httpx.Client(base_url=url, timeout=30, headers={
            "Authorization": f"Bearer {MASTER_KEY}"}) as http:
        answer = http.post("/v1/chat/completions", json={
            "model": "chat", "user": "u", "messages": [{"role": "user", "content": "hi"}]})
        call_id = answer.headers["x-switchboard-call-id"]
        variant = answer.headers["x-switchboard-variant"].split("/")[1]
        assert http.post("/v1/feedback", json={"request_id": call_id,
                                               "score": 1_000_000}).status_code == 201
        with sqlite3.connect(database) as db:
            db.executemany("INSERT INTO feedback (id, call_id, created_at, score) "
                           "VALUES (?, ?, '2026-01-01 00:00:00', 1e308)",
                           [("old-1", call_id), ("old-2", call_id)])
        report = http.get("/admin/experiments/sh")
        assert report.status_code == 200, report.text
        score = report.json()["variants"][variant]["feedback_score"]
        assert (score["n"], score["mean"]) == (1, 1_000_000)


def test_an_experiments_report_counts_its_variants_and_their_feedback(
        simulator: str, tmp_path: Path) -> None:
    """Calls split between two variants, feedback on each call, the report per variant: calls,
    feedback means, and a difference the confidence sequences show."""
    raw = sim_config(simulator)
    raw["providers"]["sim2"] = {**raw["providers"]["sim"]}
    raw["experiments"] = {"ab": {"model": "chat", "variants": {
        "control": {"targets": [{"provider": "sim", "model": "gpt-4o-mini"}]},
        "candidate": {"targets": [{"provider": "sim2", "model": "gpt-4o-mini"}]}}}}
    settings = settings_for(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}", None)
    lane = create_app(settings, config=parse_config(raw, {}), strict_telemetry=True)
    with serve(lane) as url, httpx.Client(base_url=url, timeout=30, headers={
            "Authorization": f"Bearer {MASTER_KEY}"}) as http:
        served: Counter[str] = Counter()
        calls = []
        for i in range(160):
            answer = http.post("/v1/chat/completions", json={
                "model": "chat", "user": f"user-{i % 80}",
                "messages": [{"role": "user", "content": "hi"}]})
            variant = answer.headers["x-switchboard-variant"].split("/")[1]
            served[variant] += 1
            calls.append((answer.headers["x-switchboard-call-id"], variant))
        for call_id, variant in calls:
            score = 0.8 if variant == "candidate" else 0.3
            assert http.post("/v1/feedback", json={"request_id": call_id,
                                                   "score": score}).status_code == 201
        report = http.get("/admin/experiments/ab").json()
        assert report["control"] == "control"
        by = report["variants"]
        assert {v: by[v]["calls"] for v in by} == dict(served)
        assert by["candidate"]["feedback_score"]["mean"] == pytest.approx(0.8)
        assert by["control"]["feedback_score"]["mean"] == pytest.approx(0.3)
        assert by["candidate"]["differs_from_control"]["feedback_score"] is True
        assert by["candidate"]["differs_from_control"]["error_rate"] is False
        assert by["control"]["differs_from_control"] is None
        # No call asked for JSON or was refused yet.
        assert by["control"]["refusal_rate"]["mean"] == 0.0
        assert by["control"]["json_validity"]["n"] == 0
        assert http.get("/admin/experiments/nope").status_code == 404


def test_refusals_and_json_answers_are_logged_and_reported(tmp_path: Path) -> None:
    """A refused answer (unary and streamed) and answers to JSON requests, valid or cut short
    by max_tokens, land in their rows and in the experiment's rates."""
    stack_sim = ExitStack()
    simulator = stack_sim.enter_context(serve(create_sim(SimOptions())))
    raw = sim_config(simulator)
    raw["experiments"] = {"ab": {"model": "chat", "variants": {
        name: {"targets": [{"provider": "sim", "model": "gpt-4o-mini"}]}
        for name in ("a", "b")}}}
    settings = settings_for(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}", None)
    lane = create_app(settings, config=parse_config(raw, {}), strict_telemetry=True)
    hi = [{"role": "user", "content": "hi"}]
    json_mode = {"type": "json_object"}
    with stack_sim, serve(lane) as url, httpx.Client(base_url=url, timeout=30, headers={
            "Authorization": f"Bearer {MASTER_KEY}"}) as http:
        sent: list[tuple[dict[str, Any], int, tuple[bool, bool | None]]] = [
            # body, the simulator's refusal rate, the row's (refusal, json_valid)
            ({"messages": hi}, 1, (True, None)),
            ({"messages": hi, "stream": True}, 1, (True, None)),
            ({"messages": hi}, 0, (False, None)),
            ({"messages": hi, "response_format": json_mode}, 0, (False, True)),
            ({"messages": hi, "response_format": json_mode, "stream": True}, 0, (False, True)),
            ({"messages": hi, "response_format": json_mode, "max_tokens": 3}, 0, (False, False)),
        ]
        ids = []
        for body, refusal_rate, _ in sent:
            assert httpx.post(f"{simulator}/_sim/state",
                              json={"refusal_rate": refusal_rate}).status_code == 200
            answer = http.post("/v1/chat/completions", json={"model": "chat", **body})
            assert answer.status_code == 200, answer.text
            ids.append(answer.headers["x-switchboard-call-id"])
        deadline = time.monotonic() + 10
        while len(rows := http.get("/admin/calls", params={"experiment": "ab"}).json()["data"]) \
                < len(sent):
            assert time.monotonic() < deadline, rows
            time.sleep(0.05)
        by_id = {row["id"]: (row["refusal"], row["json_valid"]) for row in rows}
        assert [by_id[i] for i in ids] == [verdict for _, _, verdict in sent]
        arms = http.get("/admin/experiments/ab").json()["variants"].values()

        def total(metric: str) -> tuple[int, float]:
            """(answers counted, how many of them were true) over both variants."""
            return (sum(a[metric]["n"] for a in arms),
                    sum(a[metric]["n"] * (a[metric]["mean"] or 0) for a in arms))

        assert total("refusal_rate") == (6, 2.0)
        assert total("json_validity") == (3, 2.0)
