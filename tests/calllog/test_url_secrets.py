"""A database password given as ``?password=`` (asyncpg takes it) is never shown: not by
``/readyz``, which needs no key, nor by the start-up warning."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from app.config import parse_config
from app.main import create_app
from app.settings import Settings
from tests.api.conftest import MASTER_KEY, sim_config
from tests.servers import free_port, serve

PASSWORD = "SuperSecretPw123"


def test_readyz_masks_a_password_in_the_database_url_query(
        simulator: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A database down at start: ``/readyz`` names it with ``?password=***``, and no log line
    carries the password."""
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/t4e_a?password={PASSWORD}"
    settings = Settings(master_key=SecretStr(MASTER_KEY), database_url=url,
                        spool_dir=tmp_path / "spool")
    app = create_app(settings, config=parse_config(sim_config(simulator), {}),
                     strict_telemetry=True)
    with caplog.at_level(logging.INFO), serve(app) as base:
        answer = httpx.get(base + "/readyz")
    assert answer.status_code == 200, answer.text
    detail = answer.json()["calllog"]["store"]["detail"]
    assert detail.startswith("could not check the database at postgresql://postgres@127.0.0.1:")
    assert "/t4e_a?password=***: " in detail
    assert PASSWORD not in answer.text
    assert "call log database unavailable at start" in caplog.text
    assert PASSWORD not in caplog.text
