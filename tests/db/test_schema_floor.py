"""The schema floor (``app.db.floor``): a switchboard older than the database it is pointed at
runs on it when the newer migrations kept its code working (a rollback, an old pod restarting
mid-rollout), and refuses, saying so, when one of them broke it."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text

from app.calllog.condition import Condition
from app.calllog.file_spool import FileSpool
from app.calllog.postgres import PostgresStore
from app.calllog.record import CallRecord
from app.calllog.runtime import check_store
from app.calllog.writer import CallLogWriter
from app.db.engine import make_engine
from app.db.floor import FIRST, compatible_from
from app.db.migrate import SchemaNotReady, alembic_config, check_current, head_revisions, upgrade
from tests.db.test_db_cli import SWITCHBOARD, db
from tests.db.test_migrations import _migrate
from tests.servers import free_port, stop_processes, wait_ready

HEAD = head_revisions()[0]
NEWER = "9999"
"""A revision a newer switchboard migrated the database to (this code does not know it)."""


async def _pg(url: str, *statements: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(url)
    try:
        rows: list[asyncpg.Record] = []
        for statement in statements:
            rows = await connection.fetch(statement)
        return rows
    finally:
        await connection.close()


async def _newer(url: str, floor: str) -> None:
    """Make the Postgres at ``url`` look migrated by a newer switchboard, with ``floor``."""
    await _pg(url, f"UPDATE alembic_version SET version_num = '{NEWER}'",
              f"UPDATE schema_floor SET revision = '{floor}'")


def test_every_migration_declares_a_floor_at_or_before_itself() -> None:
    """Each revision names the oldest revision whose code runs on its schema: itself (breaking)
    or an earlier one (additive); 0018 broke older code, 0019, 0020 and 0021 did not."""
    script = ScriptDirectory.from_config(alembic_config())
    for revision in script.walk_revisions():
        older = {r.revision for r in script.iterate_revisions(revision.revision, "base")}
        assert compatible_from(revision.revision) in older, revision.revision
    assert [compatible_from(r) for r in ("0017", "0018", "0019", "0020", "0021")] == \
        ["0001", "0018", "0018", "0018", "0018"]


async def test_the_migrations_write_the_floor(migrated_pg: str) -> None:
    """After an upgrade the database's floor is its head's; a downgrade below ``FIRST`` takes
    the table away, and the upgrade back writes it again."""
    rows = await _pg(migrated_pg, "SELECT revision FROM schema_floor")
    assert [row["revision"] for row in rows] == [compatible_from(HEAD)]
    engine = make_engine(migrated_pg)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_migrate, alembic_config(migrated_pg), "downgrade", "0019")
            assert (await connection.execute(text(
                "SELECT to_regclass('schema_floor') IS NULL"))).scalar_one()
            await connection.run_sync(_migrate, alembic_config(migrated_pg), "upgrade", FIRST)
            assert (await connection.execute(text(
                "SELECT revision FROM schema_floor"))).scalars().all() == [compatible_from(FIRST)]
    finally:
        await engine.dispose()


@pytest.mark.parametrize("floor", [compatible_from(HEAD), HEAD])
async def test_a_newer_schema_whose_floor_we_reach_serves(migrated_pg: str, floor: str) -> None:
    """A database a newer switchboard migrated, with a floor at or below this code's head, passes
    the check, and ``upgrade`` leaves it at its revision."""
    await _newer(migrated_pg, floor)
    await check_current(migrated_pg)
    assert await upgrade(migrated_pg) == (NEWER,)
    rows = await _pg(migrated_pg, "SELECT version_num FROM alembic_version")
    assert [row["version_num"] for row in rows] == [NEWER]


async def test_a_newer_schema_whose_floor_is_above_us_is_refused(migrated_pg: str) -> None:
    """A floor this code does not know (above its head) is refused, naming it; so is a newer
    database with no floor (migrated by a switchboard from before floors)."""
    await _newer(migrated_pg, "9998")
    says = (f"has schema revision {NEWER}, newer than this version of switchboard knows, and it "
            f"needs switchboard at schema revision 9998 or newer (this one is at {HEAD}): "
            "upgrade switchboard")
    for attempt in (check_current, upgrade):
        with pytest.raises(SchemaNotReady) as caught:
            await attempt(migrated_pg)
        assert says in str(caught.value)
    await _pg(migrated_pg, "DROP TABLE schema_floor")
    with pytest.raises(SchemaNotReady, match=f"revision {NEWER}, newer than this version of "
                                             "switchboard knows: upgrade switchboard"):
        await check_current(migrated_pg)


def _serve_once_ready(url: str, cwd: Path) -> tuple[dict[str, Any], str]:
    """Start ``switchboard serve`` on ``url``; its ``/readyz`` once ready, and its output once
    stopped."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    proc = subprocess.Popen(
        [SWITCHBOARD, "serve", "--port", str(port)], cwd=cwd, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, env={**clean, "SWITCHBOARD_DATABASE_URL": url})
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz").json()
    finally:
        stop_processes([proc])
        assert proc.stdout is not None
        with proc.stdout:
            output = proc.stdout.read().decode()
    return ready, output


async def test_an_older_switchboard_serves_on_a_newer_schema_it_runs_on(
        migrated_pg: str, tmp_path: Path) -> None:
    """``switchboard serve`` (what an old pod of a rollback runs) on a Postgres a newer
    switchboard migrated, whose floor it reaches: it starts, warns, and its call-log store is
    up."""
    await _newer(migrated_pg, compatible_from(HEAD))
    ready, output = await asyncio.to_thread(_serve_once_ready, migrated_pg, tmp_path)
    assert ready["calllog"]["store"]["up"] is True, ready
    assert f"it is compatible from revision {compatible_from(HEAD)}" in output


def _writer(url: str, tmp_path: Path) -> CallLogWriter:
    """A writer whose store was unreachable at start (a database blip): it re-checks the schema
    (``check_store``) before it writes."""
    return CallLogWriter(
        store=PostgresStore(make_engine(url)), file_spool=FileSpool(tmp_path / "spool"),
        check_store=lambda: check_store(url),
        store_condition=Condition(up=False, reason="unreachable", detail="a blip"))


async def _checked(writer: CallLogWriter) -> Condition:
    """The store's condition once the writer's re-check has run."""
    writer.submit(CallRecord(id="row-1", endpoint="/v1/chat/completions", caller="master"))
    for _ in range(200):
        await writer.flush_once()
        store = writer.conditions()["store"]
        if store.reason != "unreachable":
            return store
        await asyncio.sleep(0.02)
    raise AssertionError("the writer never re-checked the store")


@pytest.mark.parametrize("above", [False, True], ids=["floor reached", "floor above"])
async def test_the_writers_recheck_agrees(migrated_pg: str, tmp_path: Path,
                                          above: bool) -> None:
    """A running gateway that re-checks the schema after a blip agrees with the start-up check:
    it writes to a newer schema whose floor it reaches, and holds the rows (``unmigrated``) for
    one whose floor is above it."""
    await _newer(migrated_pg, "9998" if above else compatible_from(HEAD))
    writer = _writer(migrated_pg, tmp_path)
    try:
        store = await _checked(writer)
        if above:
            assert (store.up, store.reason) == (False, "unmigrated")
            assert "needs switchboard at schema revision 9998" in (store.detail or "")
        else:
            assert store.up, store
            await writer.flush_once()
            rows = await _pg(migrated_pg, "SELECT id FROM calls")
            assert [row["id"] for row in rows] == ["row-1"]
    finally:
        await writer.aclose(timeout_s=2)


def test_the_cli_on_a_newer_sqlite_file_whose_floor_we_reach(tmp_path: Path) -> None:
    """``db check`` and ``db upgrade`` of an embedded SQLite file a newer switchboard migrated
    pass when this code reaches its floor, and leave it at its revision."""
    path = tmp_path / "newer.db"
    url = f"sqlite:///{path}"
    assert db("upgrade", "--database-url", url).returncode == 0
    connection = sqlite3.connect(path)
    connection.execute(f"UPDATE alembic_version SET version_num = '{NEWER}'")
    connection.commit()
    connection.close()
    checked = db("check", "--database-url", url)
    assert checked.returncode == 0, checked.stderr
    assert f"compatible from revision {compatible_from(HEAD)}" in checked.stderr
    assert f"is at schema revision {NEWER}, newer than this switchboard, which runs on it" \
        in checked.stdout
    assert "up to date" not in checked.stdout
    upgraded = db("upgrade", "--database-url", url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"is at schema revision {NEWER} (newer than this switchboard" in upgraded.stdout
    connection = sqlite3.connect(path)
    assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [(NEWER,)]
    connection.close()
