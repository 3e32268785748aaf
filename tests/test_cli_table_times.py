"""Every CLI table prints a moment in the one form the README Glossary promises ("time"):
UTC to the millisecond, ``2026-12-06 23:00:00.123`` (``app.cli.table_time``): ``logs query``
did, ``keys list`` printed the admin API's ISO form and ``drift baseline list`` whole seconds
with " UTC"."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner

from app.calllog.cli import table_row
from app.cli import main, table_time
from app.db.engine import make_engine
from app.db.migrate import upgrade
from app.metrics.baselines import Baseline, DatabaseBaselines
from tests.test_readme import README

MOMENT = datetime(2026, 12, 6, 23, 0, 0, 123456, tzinfo=UTC)
SHOWN = "2026-12-06 23:00:00.123"


def test_one_form_whatever_the_moment_is_held_as() -> None:
    """Epoch seconds, an aware or naive datetime and the API's ISO text print alike."""
    for moment in (MOMENT.timestamp(), MOMENT, MOMENT.replace(tzinfo=None),
                   "2026-12-06T23:00:00.123456Z"):
        assert table_time(moment) == SHOWN, moment


def test_the_glossary_shows_that_form() -> None:
    """The README Glossary's example of a table time is what ``table_time`` prints."""
    glossary = " ".join(README[README.index("- **time**"):].split())[:600]
    example = re.search(r"print UTC shorter \(`([^`]+)`", glossary)
    assert example is not None and example[1] == SHOWN


def test_logs_query_rows() -> None:
    """A ``logs query`` row starts with the call's time in that form."""
    row = {"created_at": "2026-12-06T23:00:00.123456Z", "id": "c1", "status": "ok"}
    assert table_row(row).startswith(SHOWN + "  c1")


def test_keys_list_prints_the_expiry_in_that_form(tmp_path: Path) -> None:
    """``keys list`` shows ``expires=`` as the other tables do (was ISO with microseconds)."""
    (tmp_path / "keys.db").touch()  # only the embedded default's file is created
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    runner = CliRunner()
    created = runner.invoke(main, ["keys", "create", "--name", "k", "--expires",
                                   "2027-06-30T12:34:56", "--database-url", url])
    assert created.exit_code == 0, created.output
    listed = runner.invoke(main, ["keys", "list", "--database-url", url])
    assert listed.exit_code == 0, listed.output
    assert "expires=2027-06-30 12:34:56.000" in listed.output, listed.output


def test_drift_baseline_list_prints_the_capture_in_that_form(tmp_path: Path) -> None:
    """``drift baseline list`` shows when a baseline was captured in that form (was
    ``%Y-%m-%d %H:%M:%S UTC``)."""
    url = f"sqlite:///{tmp_path / 'drift.db'}"

    async def store_one() -> None:
        await upgrade(url)
        engine = make_engine(url)
        try:
            await DatabaseBaselines(engine).save_if_absent(Baseline(
                model="chat", provider="sim", signal="length", samples=50, data={},
                captured_at=MOMENT.timestamp(), upstream_model="gpt-4o-mini"))
        finally:
            await engine.dispose()

    asyncio.run(store_one())
    listed = CliRunner().invoke(main, ["drift", "baseline", "list", "--database-url", url])
    assert listed.exit_code == 0, listed.output
    assert listed.output.splitlines()[1].endswith("  " + SHOWN), listed.output
