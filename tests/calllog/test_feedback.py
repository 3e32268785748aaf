"""Feedback on calls (``POST /v1/feedback``) through a running gateway with its call log on
SQLite: stored and read back, several per call, by call id or the client's request id; bad
input a 400, an unknown call a 404. The experiment report over the logged calls: feedback,
refusals and JSON validity per variant (verdicts through Postgres and the Redis spool too)."""

from __future__ import annotations

import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from click.testing import CliRunner

from app.cli import main
from app.config import parse_config
from app.experiments import MIN_SAMPLES
from app.main import create_app
from app.simulator.app import create_app as create_sim
from app.simulator.content import REFUSAL
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


JSON_MODE = {"type": "json_object"}
SCHEMA = {"type": "json_schema", "json_schema": {"name": "city", "schema": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
HI = [{"role": "user", "content": "hi"}]
VERDICT_CASES: list[tuple[dict[str, Any], int, tuple[bool | None, bool | None]]] = [
    # body, the simulator's refusal rate, the row's (refusal, json_valid)
    ({}, 1, (True, None)),  # the refusal sentence as content
    ({"stream": True}, 1, (True, None)),
    ({}, 0, (False, None)),
    ({"response_format": JSON_MODE}, 0, (False, True)),
    ({"response_format": JSON_MODE, "stream": True}, 0, (False, True)),
    ({"response_format": JSON_MODE, "max_tokens": 3}, 0, (False, False)),  # cut short
    ({"response_format": JSON_MODE, "max_tokens": 3, "stream": True}, 0, (False, False)),
    ({"response_format": SCHEMA}, 1, (True, None)),  # message.refusal, content null
    ({"response_format": SCHEMA, "stream": True}, 1, (True, None)),  # delta.refusal
    ({"response_format": SCHEMA}, 0, (False, True)),
    ({"response_format": JSON_MODE, "n": 2}, 0, (False, None)),  # two texts: not judged
]


def sse_deltas(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:])["choices"][0]["delta"] for line in text.splitlines()
            if line.startswith("data: {") and '"choices":[{' in line]


@pytest.mark.parametrize("backend", ["postgres-redis", "sqlite"])
def test_refusals_and_json_answers_are_logged_and_reported(
        backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Refusals (a sentence, OpenAI's ``refusal`` field) and answers to JSON requests (valid,
    or cut short by max_tokens), unary and streamed, land in their rows through the spools and
    in the experiment's rates; calls without a verdict stay NULL."""
    if backend == "sqlite":
        url, redis_url = f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}", None
    else:
        url = request.getfixturevalue("postgres").url
        redis_url = request.getfixturevalue("redis_server").url
    stack_sim = ExitStack()
    simulator = stack_sim.enter_context(serve(create_sim(SimOptions())))
    raw = sim_config(simulator)
    raw["experiments"] = {"ab": {"model": "chat", "variants": {
        name: {"targets": [{"provider": "sim", "model": "gpt-4o-mini"}]}
        for name in ("a", "b")}}}
    lane = create_app(settings_for(tmp_path, url, redis_url), config=parse_config(raw, {}),
                      strict_telemetry=True)
    with stack_sim, serve(lane) as gateway, httpx.Client(base_url=gateway, timeout=30, headers={
            "Authorization": f"Bearer {MASTER_KEY}"}) as http:
        ids = []
        for body, refusal_rate, _ in VERDICT_CASES:
            assert httpx.post(f"{simulator}/_sim/state",
                              json={"refusal_rate": refusal_rate}).status_code == 200
            answer = http.post("/v1/chat/completions",
                               json={"model": "chat", "messages": HI, **body})
            assert answer.status_code == 200, answer.text
            ids.append(answer.headers["x-switchboard-call-id"])
            if body.get("response_format") is SCHEMA and refusal_rate:  # relayed as sent
                if body.get("stream"):
                    deltas = sse_deltas(answer.text)
                    assert "".join(d.get("refusal") or "" for d in deltas) == REFUSAL
                    assert not any(d.get("content") for d in deltas)
                else:
                    message = answer.json()["choices"][0]["message"]
                    assert (message["refusal"], message["content"]) == (REFUSAL, None)
        embedded = http.post("/v1/embeddings", json={"model": "embed", "input": "x"})
        ids.append(embedded.headers["x-switchboard-call-id"])
        deadline = time.monotonic() + 30
        while len(rows := http.get("/admin/calls", params={"limit": 100}).json()["data"]) \
                < len(ids):
            assert time.monotonic() < deadline, rows
            time.sleep(0.05)
        by_id = {row["id"]: (row["refusal"], row["json_valid"]) for row in rows}
        assert [by_id[i] for i in ids] == [verdict for _, _, verdict in VERDICT_CASES] + [
            (None, None)]
        report = http.get("/admin/experiments/ab").json()["variants"]

    def total(metric: str) -> tuple[int, int]:
        """(answers counted, how many of them were true) over both variants."""
        return (sum(arm[metric]["n"] for arm in report.values()),
                round(sum(arm[metric]["n"] * (arm[metric]["mean"] or 0)
                          for arm in report.values())))

    def expected(verdicts: list[bool | None]) -> tuple[int, int]:
        given = [verdict for verdict in verdicts if verdict is not None]
        return len(given), sum(given)

    assert total("refusal_rate") == expected([v[0] for _, _, v in VERDICT_CASES]) == (11, 4)
    assert total("json_validity") == expected([v[1] for _, _, v in VERDICT_CASES]) == (5, 3)


def test_a_variant_that_refuses_differs_from_the_control(tmp_path: Path) -> None:
    """A candidate whose upstream refuses every JSON request: its refusal rate (1) and JSON
    validity (0) differ from the control's (0 and 1) in the report and the CLI's text; its
    error rate does not."""
    with ExitStack() as stack:
        sims = [stack.enter_context(serve(create_sim(SimOptions()))) for _ in range(2)]
        assert httpx.post(f"{sims[1]}/_sim/state", json={"refusal_rate": 1}).status_code == 200
        raw = sim_config(sims[0])
        raw["providers"]["refusing"] = {**raw["providers"]["sim"], "base_url": f"{sims[1]}/v1"}
        raw["experiments"] = {"ab": {"model": "chat", "variants": {
            "control": {"targets": [{"provider": "sim", "model": "gpt-4o-mini"}]},
            "candidate": {"targets": [{"provider": "refusing", "model": "gpt-4o-mini"}]}}}}
        settings = settings_for(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}", None)
        gateway = stack.enter_context(serve(create_app(
            settings, config=parse_config(raw, {}), strict_telemetry=True)))
        http = stack.enter_context(httpx.Client(base_url=gateway, timeout=30, headers={
            "Authorization": f"Bearer {MASTER_KEY}"}))
        served: Counter[str] = Counter()
        for i in range(120):
            answer = http.post("/v1/chat/completions", json={
                "model": "chat", "user": f"user-{i}", "messages": HI,
                "response_format": JSON_MODE})
            assert answer.status_code == 200, answer.text
            served[answer.headers["x-switchboard-variant"]] += 1
        assert min(served.values()) >= MIN_SAMPLES, served  # both get a sequence
        deadline = time.monotonic() + 30
        while (report := http.get("/admin/experiments/ab").json())["variants"]["candidate"][
                "refusal_rate"]["n"] + report["variants"]["control"]["refusal_rate"]["n"] < 120:
            assert time.monotonic() < deadline, report
            time.sleep(0.05)
        printed = CliRunner().invoke(main, ["experiments", "report", "ab", "--url", gateway,
                                            "--key", MASTER_KEY])
    control, candidate = report["variants"]["control"], report["variants"]["candidate"]
    assert (control["refusal_rate"]["mean"], candidate["refusal_rate"]["mean"]) == (0, 1)
    assert (control["json_validity"]["mean"], candidate["json_validity"]["mean"]) == (1, 0)
    differs = candidate["differs_from_control"]
    assert (differs["refusal_rate"], differs["json_validity"]) == (True, True)
    assert (differs["error_rate"], differs["feedback_score"]) == (False, None)  # no feedback
    assert printed.exit_code == 0, printed.output
    lines = printed.output.splitlines()
    candidate_lines = lines[next(i for i, line in enumerate(lines)
                                 if line.startswith("candidate:")):]
    for metric, mean in (("refusal_rate", "1"), ("json_validity", "0")):
        shown = next(line for line in candidate_lines if line.strip().startswith(metric))
        assert f"mean {mean} [" in shown and shown.endswith("differs from control"), shown
