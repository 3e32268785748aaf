"""Call ids and request ids: every call has a gateway-generated id of its own, returned in
``x-switchboard-call-id``; the client's ``x-request-id`` is echoed, kept in ``calls.request_id``
and searchable. Through a running gateway on SQLite and Postgres, read back with the admin API
and ``switchboard logs``."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from app.calllog.cli import logs
from app.config import parse_config
from app.db.migrate import upgrade
from app.main import create_app
from app.settings import Settings
from tests.api.conftest import MASTER_KEY, sim_config
from tests.servers import serve

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
USER = [{"role": "user", "content": "hi"}]
CALL_ID = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture
def gateway(database_url: str, simulator: str, tmp_path: Path) -> Iterator[str]:
    """A gateway logging calls to ``database_url`` (SQLite or Postgres, migrated)."""
    asyncio.run(upgrade(database_url))
    settings = Settings(master_key=SecretStr(MASTER_KEY), database_url=database_url,
                        spool_dir=tmp_path / "spool")
    app = create_app(settings, config=parse_config(sim_config(simulator), {}),
                     strict_telemetry=True)
    with serve(app) as url:
        yield url


def rows(url: str, **params: str) -> list[dict[str, Any]]:
    response = httpx.get(url + "/admin/calls", params=params, headers=AUTH)
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def stored(url: str, call_id: str) -> dict[str, Any]:
    """The row of call ``call_id``, waiting for the writer to store it."""
    deadline = time.monotonic() + 20
    while True:
        response = httpx.get(f"{url}/admin/calls/{call_id}", headers=AUTH)
        if response.status_code == 200:
            row: dict[str, Any] = response.json()
            return row
        assert response.status_code == 404, response.text
        assert time.monotonic() < deadline, f"call {call_id} was never stored"
        time.sleep(0.1)


def chat(url: str, *, headers: dict[str, str] | None = None,
         body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", headers={**AUTH, **(headers or {})},
                      json=body or {"model": "chat", "messages": USER})


def test_a_reused_request_id_gives_each_call_its_own_id(gateway: str) -> None:
    """Three calls sent with one x-request-id: each answer echoes it, each has its own call
    id, each row is found by its call id, and ?request_id= finds all three."""
    answers = [chat(gateway, headers={"x-request-id": "dup-1"}) for _ in range(3)]
    assert [a.status_code for a in answers] == [200] * 3
    assert [a.headers["x-request-id"] for a in answers] == ["dup-1"] * 3
    call_ids = [a.headers["x-switchboard-call-id"] for a in answers]
    assert len(set(call_ids)) == 3 and all(CALL_ID.match(c) for c in call_ids)
    for call_id, answer in zip(call_ids, answers, strict=True):
        row = stored(gateway, call_id)
        assert (row["id"], row["request_id"], row["status"]) == (call_id, "dup-1", "ok")
        assert row["completion_tokens"] == answer.json()["usage"]["completion_tokens"]
    found = rows(gateway, request_id="dup-1")
    assert sorted(r["id"] for r in found) == sorted(call_ids)
    assert rows(gateway, request_id="dup-1", status="error") == []
    assert rows(gateway, request_id="no-such-request") == []


@pytest.mark.parametrize("given", [None, "has spaces", "x" * 129, "ünïcode"])
def test_without_a_usable_request_id_the_call_id_is_echoed(gateway: str,
                                                           given: str | None) -> None:
    """No x-request-id, or one that is not a sane token: x-request-id is the call id (as
    before), and the row's request_id is null."""
    headers = {} if given is None else {"x-request-id": given}
    answer = httpx.post(gateway + "/v1/chat/completions",
                        headers={k.encode(): v.encode() for k, v in {**AUTH, **headers}.items()},
                        json={"model": "chat", "messages": USER})
    assert answer.status_code == 200
    call_id = answer.headers["x-switchboard-call-id"]
    assert answer.headers["x-request-id"] == call_id and CALL_ID.match(call_id)
    assert stored(gateway, call_id)["request_id"] is None


def test_streams_carry_both_ids(gateway: str) -> None:
    """A stream's response headers carry the call id and the echoed request id."""
    client = openai.OpenAI(base_url=gateway + "/v1", api_key=MASTER_KEY, max_retries=0)
    with client, client.chat.completions.with_streaming_response.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], stream=True,
            extra_headers={"x-request-id": "stream-1"}) as response:
        chunks = list(response.iter_lines())
        headers = response.headers
    assert any(line.startswith("data:") for line in chunks)
    assert headers["x-request-id"] == "stream-1"
    row = stored(gateway, headers["x-switchboard-call-id"])
    assert (row["request_id"], row["stream"], row["status"]) == ("stream-1", True, "ok")


@pytest.mark.parametrize(("headers", "body", "status"), [
    ({"Authorization": "Bearer sk-wrong"}, None, 401),
    ({}, {"model": "chat"}, 400),
    ({}, {"model": "no-such-model", "messages": USER}, 404),
    ({}, {"model": "chat", "messages": USER, "n": 1000}, 400),
])
def test_rejections_carry_both_ids_and_their_row(gateway: str, headers: dict[str, str],
                                                 body: dict[str, Any] | None,
                                                 status: int) -> None:
    """A refused call (bad key, bad body, unknown model, over a limit) answers with its call
    id and the client's request id, and its row is under that call id."""
    answer = chat(gateway, headers={"x-request-id": f"rej-{status}", **headers}, body=body)
    assert answer.status_code == status, answer.text
    assert answer.headers["x-request-id"] == f"rej-{status}"
    row = stored(gateway, answer.headers["x-switchboard-call-id"])
    assert (row["request_id"], row["http_status"], row["status"]) == (f"rej-{status}", status,
                                                                      "error")


def test_the_fastapi_routes_give_the_same_ids(database_url: str, simulator: str,
                                              tmp_path: Path) -> None:
    """Served by the FastAPI routes (no fast lane), answers and refusals carry both ids too."""
    asyncio.run(upgrade(database_url))
    settings = Settings(master_key=SecretStr(MASTER_KEY), database_url=database_url,
                        spool_dir=tmp_path / "spool")
    lane = create_app(settings, config=parse_config(sim_config(simulator), {}),
                      strict_telemetry=True)
    with serve(lane.app) as url:
        ok = chat(url, headers={"x-request-id": "plain-ok"})
        refused = chat(url, headers={"x-request-id": "plain-401",
                                     "Authorization": "Bearer sk-wrong"})
        for answer, request_id in ((ok, "plain-ok"), (refused, "plain-401")):
            assert answer.headers["x-request-id"] == request_id
            row = stored(url, answer.headers["x-switchboard-call-id"])
            assert row["request_id"] == request_id
    assert (ok.status_code, refused.status_code) == (200, 401)


def test_cli_filters_by_request_id(gateway: str) -> None:
    """switchboard logs query --request-id lists every call sent with that id, and only them."""
    call_ids = {chat(gateway, headers={"x-request-id": "cli-1"}).headers["x-switchboard-call-id"]
                for _ in range(2)}
    chat(gateway, headers={"x-request-id": "cli-2"})
    for call_id in call_ids:
        stored(gateway, call_id)
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("SWITCHBOARD_")}
    result = CliRunner().invoke(logs, ["query", "--url", gateway, "--key", MASTER_KEY,
                                       "--request-id", "cli-1", "--json"], env=env)
    assert result.exit_code == 0, result.output
    printed = [line for line in result.output.splitlines() if line.startswith("{")]
    assert len(printed) == 2 and all('"request_id":"cli-1"' in line for line in printed)
    assert {line.split('"id":"')[1][:32] for line in printed} == call_ids


def test_cli_filters_as_admin_calls_does(gateway: str) -> None:
    """``logs query`` takes /admin/calls's filters: ``--caller unauthenticated`` (a refused
    key's calls; named in the help), ``--config-version``, and the experiment and prompt ones
    (no call here was split or rendered a template: none matches them)."""
    ok = chat(gateway, headers={"x-request-id": "cli-filters"})
    refused = httpx.post(gateway + "/v1/chat/completions", timeout=30,
                         json={"model": "chat", "messages": USER},
                         headers={"Authorization": "Bearer sk-sb-revoked-or-never-made",
                                  "x-request-id": "cli-filters"})
    assert refused.status_code == 401
    ok_row = stored(gateway, ok.headers["x-switchboard-call-id"])
    refused_id = refused.headers["x-switchboard-call-id"]
    stored(gateway, refused_id)
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("SWITCHBOARD_")}

    def printed(*args: str) -> list[str]:
        result = CliRunner().invoke(logs, ["query", "--url", gateway, "--key", MASTER_KEY,
                                           "--request-id", "cli-filters", "--json", *args],
                                    env=env)
        assert result.exit_code == 0, result.output
        return [line.split('"id":"')[1][:32] for line in result.output.splitlines()
                if line.startswith("{")]

    assert printed("--caller", "unauthenticated") == [refused_id]
    assert printed("--config-version", ok_row["config_version"], "--caller", "master") == [
        ok_row["id"]]
    assert printed("--config-version", "not-a-version") == []
    for args in (["--experiment", "e"], ["--variant", "v"], ["--prompt-id", "p"],
                 ["--prompt-version", "1"]):
        assert printed(*args) == [], args
    shown = CliRunner().invoke(logs, ["query", "--help"]).output
    assert "unauthenticated" in shown
    assert all(option in shown for option in ("--experiment", "--variant", "--config-version",
                                              "--prompt-id", "--prompt-version"))


def test_logs_query_refuses_a_caller_no_row_names() -> None:
    """``--caller`` takes the callers rows name: a typo is a usage error (exit 2), not an
    empty table that reads as "no such calls"."""
    from app.calllog.cli import logs

    result = CliRunner().invoke(logs, ["query", "--caller", "masterr", "--url",
                                       "http://127.0.0.1:9"])
    assert result.exit_code == 2 and "'masterr' is not one of" in result.output
