"""``drift`` is read once, at start-up: a reload that changes ``drift.refusal_phrases`` moves
neither the call rows' ``refusal`` nor the drift metrics' ``switchboard_refusals_total`` (both
judge with the start-up phrases until a restart, so the two numbers agree), and the reload says
so in ``restart_needed``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import SecretStr

from app.main import create_app
from app.settings import Settings
from tests.api.conftest import ListSink
from tests.metrics.scrape import scrape, value
from tests.servers import serve

MASTER = "sk-drift-reload-7Rk2mQ"
ADMIN = {"Authorization": f"Bearer {MASTER}"}
MATCHING = ["mock reply"]
"""A phrase every answer of the mock provider opens with ("Mock reply to: ...")."""


def config(phrases: list[str] | None) -> dict[str, Any]:
    drift: dict[str, Any] = {"embedding": {"sample_rate": 0}}
    if phrases is not None:
        drift["refusal_phrases"] = phrases
    return {"providers": {"mock": {"type": "mock"}},
            "models": {"chat": {"targets": [{"provider": "mock", "model": "mock-chat"}]}},
            "drift": drift}


@pytest.mark.parametrize(("start", "reloaded", "refused"), [
    (None, MATCHING, False),
    (MATCHING, None, True),
], ids=["phrase-added-by-reload", "phrase-removed-by-reload"])
def test_reloaded_refusal_phrases_wait_for_a_restart_in_rows_and_metrics(
        tmp_path: Path, start: list[str] | None, reloaded: list[str] | None,
        refused: bool) -> None:
    """After the reload, a call is judged with the start-up phrases by its row and by the
    drift metrics alike."""
    file = tmp_path / "gateway.yaml"
    file.write_text(yaml.safe_dump(config(start)))
    settings = Settings(master_key=SecretStr(MASTER), config=file, config_poll_s=0,
                        database_url=f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}",
                        spool_dir=tmp_path / "spool")
    sink = ListSink()
    with serve(create_app(settings, sink=sink, strict_telemetry=True)) as url:
        file.write_text(yaml.safe_dump(config(reloaded)))
        answer = httpx.post(f"{url}/admin/config/reload", headers=ADMIN, timeout=30)
        assert answer.status_code == 200 and answer.json()["changed"], answer.text
        assert "drift" in httpx.get(f"{url}/admin/config", headers=ADMIN).json()[
            "restart_needed"]
        answer = httpx.post(f"{url}/v1/chat/completions", headers={
            **ADMIN, "x-request-id": "after-reload"}, timeout=30, json={
            "model": "chat", "messages": [{"role": "user", "content": "hello"}]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"].startswith("Mock reply")
        _recorded(sink, "after-reload")
        counted = value(scrape(url, MASTER), "switchboard_refusals_total", model="chat")
    assert sink.by_id("after-reload").refusal is refused
    assert counted == (1 if refused else 0)


def _recorded(sink: ListSink, request_id: str) -> None:
    """Wait (bounded) until the call's row has been handed to the sink."""
    for _ in range(200):
        if any(r.request_id == request_id for r in sink.records):
            return
        time.sleep(0.05)
