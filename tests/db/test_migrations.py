"""Schema migrations on Postgres (partitioned) and SQLite (plain), and the schema check."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import IntegrityError

from app.db.engine import make_engine
from app.db.migrate import (
    DatabaseUnreachable,
    SchemaNotReady,
    UpgradeFailed,
    alembic_config,
    check_current,
    head_revisions,
    upgrade,
)
from app.db.partitions import month_of, next_month, partition_name
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
INDEXES = {"calls_pkey", "ix_calls_created_at", "ix_calls_public_model_created_at",
           "ix_calls_provider_created_at", "ix_calls_caller_created_at",
           "ix_calls_status_created_at", "ix_calls_request_id_created_at",
           "ix_calls_key_id_created_at", "ix_calls_team_id_created_at",
           "ix_calls_config_version_created_at", "ix_calls_experiment_created_at",
           "ix_calls_prompt_id_created_at"}


async def pg_fetch(url: str, sql: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetch(sql)
    finally:
        await connection.close()


async def test_postgres_upgrade_is_idempotent(fresh_pg: str) -> None:
    """Upgrading a fresh Postgres twice gives the head revision and a current schema."""
    assert await upgrade(fresh_pg) == head_revisions()
    assert await upgrade(fresh_pg) == head_revisions()
    await check_current(fresh_pg)


async def test_sqlite_upgrade_is_idempotent(sqlite_url: str) -> None:
    """Upgrading a new SQLite file twice gives the head revision and a current schema."""
    assert await upgrade(sqlite_url) == head_revisions()
    assert await upgrade(sqlite_url) == head_revisions()
    await check_current(sqlite_url)


async def test_postgres_calls_is_range_partitioned_by_month(migrated_pg: str) -> None:
    """On Postgres ``calls`` is range-partitioned on created_at, with this and next month's
    partitions and the admin-query indexes."""
    strategy = await pg_fetch(migrated_pg, "SELECT p.partstrat::text AS partstrat, a.attname FROM "
                              "pg_partitioned_table p JOIN pg_attribute a ON a.attrelid = "
                              "p.partrelid AND a.attnum = p.partattrs[0] "
                              "WHERE p.partrelid = 'calls'::regclass")
    assert [(r["partstrat"], r["attname"]) for r in strategy] == [("r", "created_at")]
    children = await pg_fetch(migrated_pg, "SELECT c.relname FROM pg_inherits i JOIN pg_class "
                              "c ON c.oid = i.inhrelid WHERE i.inhparent = 'calls'::regclass")
    this_month = month_of(datetime.now(UTC))
    assert {r["relname"] for r in children} == {partition_name(this_month),
                                                 partition_name(next_month(this_month))}
    indexes = await pg_fetch(migrated_pg,
                             "SELECT indexname FROM pg_indexes WHERE tablename = 'calls'")
    assert {r["indexname"] for r in indexes} == INDEXES


async def test_sqlite_calls_is_a_plain_table_with_indexes(migrated_sqlite: str) -> None:
    """On SQLite ``calls`` is one table with the same indexes."""
    engine = make_engine(migrated_sqlite)
    try:
        async with engine.connect() as connection:
            tables = (await connection.execute(text(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'calls%'"
            ))).scalars().all()
            indexes = (await connection.execute(text(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'calls' "
                "AND name LIKE 'ix_%'"))).scalars().all()
    finally:
        await engine.dispose()
    assert tables == ["calls"]
    assert set(indexes) == INDEXES - {"calls_pkey"}


async def test_concurrent_postgres_upgrades_do_not_race(fresh_pg: str) -> None:
    """Several processes upgrading the same Postgres at once all succeed (advisory lock)."""
    results = await asyncio.gather(*(upgrade(fresh_pg) for _ in range(4)))
    assert results == [head_revisions()] * 4


async def test_concurrent_sqlite_upgrades_do_not_race(sqlite_url: str) -> None:
    """Several workers upgrading the same SQLite file at once all succeed (lock file)."""
    results = await asyncio.gather(*(upgrade(sqlite_url) for _ in range(4)))
    assert results == [head_revisions()] * 4


def _sqlite_state(url: str) -> tuple[list[str], set[str]]:
    """The revisions in ``alembic_version`` and the tables of the SQLite file at ``url``."""
    connection = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        tables = {row[0] for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        versions = ([row[0] for row in connection.execute("SELECT * FROM alembic_version")]
                    if "alembic_version" in tables else [])
    finally:
        connection.close()
    return versions, tables


def _sqlite_exec(url: str, sql: str) -> None:
    connection = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        connection.execute(sql)
        connection.commit()
    finally:
        connection.close()


async def test_a_failing_sqlite_upgrade_leaves_the_schema_as_it_was(sqlite_url: str) -> None:
    """A SQLite upgrade whose second step fails creates none of the tables of the steps before
    it, and once the cause is gone a later upgrade succeeds (one transaction per run)."""
    await asyncio.to_thread(command.upgrade, alembic_config(sqlite_url), "0013")
    _, before = _sqlite_state(sqlite_url)
    _sqlite_exec(sqlite_url, "CREATE TABLE call_hours (x INTEGER)")  # what 0015 creates
    with pytest.raises(UpgradeFailed, match=r"left as it was: .*call_hours already exists"):
        await upgrade(sqlite_url)
    assert _sqlite_state(sqlite_url) == (["0013"], before | {"call_hours"})  # no spend_days
    _sqlite_exec(sqlite_url, "DROP TABLE call_hours")
    assert await upgrade(sqlite_url) == head_revisions()
    await check_current(sqlite_url)


def test_a_killed_sqlite_upgrade_leaves_a_database_the_next_upgrade_migrates(
        sqlite_url: str) -> None:
    """``switchboard db upgrade`` SIGKILLed on a new SQLite file after its third CREATE TABLE
    leaves no tables behind, and the next upgrade migrates the file."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        from sqlalchemy import event
        from sqlalchemy.engine import Engine
        from app.cli import main
        created = 0
        @event.listens_for(Engine, "after_cursor_execute")
        def _kill(connection, cursor, statement, *args):
            global created
            if statement.lstrip().upper().startswith("CREATE TABLE"):
                created += 1
                if created == 3:
                    os.kill(os.getpid(), signal.SIGKILL)
        sys.argv = ["switchboard", "db", "upgrade", "--database-url", {sqlite_url!r}]
        main()
        """)
    killed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert _sqlite_state(sqlite_url) == ([], set())
    upgraded = subprocess.run([sys.executable, "-c", "from app.cli import main; main()", "db",
                               "upgrade", "--database-url", sqlite_url], cwd=ROOT,
                              capture_output=True, text=True)
    assert upgraded.returncode == 0, upgraded.stderr
    asyncio.run(check_current(sqlite_url))


async def test_check_current_refuses_an_empty_postgres(fresh_pg: str) -> None:
    """A server pointed at an unmigrated Postgres is told to run ``switchboard db upgrade``."""
    with pytest.raises(SchemaNotReady, match="switchboard db upgrade") as caught:
        await check_current(fresh_pg)
    assert "has no switchboard schema" in str(caught.value)


async def test_check_current_refuses_an_unknown_newer_revision(migrated_pg: str) -> None:
    """A database migrated by a newer switchboard that this code cannot run on (its schema floor
    is above this code's head) is refused, saying so."""
    connection = await asyncpg.connect(migrated_pg)
    try:
        await connection.execute("UPDATE alembic_version SET version_num = '9999'")
        await connection.execute("UPDATE schema_floor SET revision = '9999'")
    finally:
        await connection.close()
    with pytest.raises(SchemaNotReady, match="newer than this version"):
        await check_current(migrated_pg)


async def test_unreachable_database_is_reported_without_password() -> None:
    """An unreachable database raises DatabaseUnreachable naming it, password masked."""
    url = f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/nowhere"
    with pytest.raises(DatabaseUnreachable) as caught:
        await check_current(url)
    assert "postgresql://postgres:***@127.0.0.1" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def _check_models(connection: Connection, config: Config) -> None:
    config.attributes["connection"] = connection
    command.check(config)  # raises AutogenerateDiffsDetected on any difference


async def test_migration_matches_the_models(migrated_pg: str) -> None:
    """The migrated Postgres schema equals ``app.db.models`` (partitions aside)."""
    engine = make_engine(migrated_pg)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_check_models, alembic_config(migrated_pg))
    finally:
        await engine.dispose()


def test_every_revision_logs_one_line() -> None:
    """Alembic logs "Running upgrade A -> B, <doc>" with a revision's first docstring paragraph:
    it must be one line, or the gateway's start-up log gets a line that is not a record."""
    for script in ScriptDirectory.from_config(alembic_config()).walk_revisions():
        assert "\n" not in script.doc, script.revision


def test_alembic_cli_from_the_repository_root(tmp_path: Path) -> None:
    """``alembic upgrade head`` from the repository root migrates the URL given with -x."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    alembic = [sys.executable, "-m", "alembic", "-x", f"database_url={url}"]
    subprocess.run([*alembic, "upgrade", "head"], cwd=ROOT, check=True, capture_output=True)
    current = subprocess.run([*alembic, "current"], cwd=ROOT, check=True,
                             capture_output=True, text=True)
    assert f"{head_revisions()[0]} (head)" in current.stdout


def _privacy_columns(connection: Connection) -> dict[str, bool]:
    inspector = inspect(connection)
    return {table: any(c["name"] == "privacy" for c in inspector.get_columns(table))
            for table in ("api_keys", "teams")}


def _migrate(connection: Connection, config: Config, direction: str, revision: str) -> None:
    config.attributes["connection"] = connection
    getattr(command, direction)(config, revision)


async def _privacy_down_and_up(url: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.begin() as connection:
            assert await connection.run_sync(_privacy_columns) == {"api_keys": True,
                                                                   "teams": True}
            await connection.execute(text(
                "INSERT INTO teams (id, name, budget_period, metadata, created_at, privacy) "
                "VALUES ('team_1', 't', 'month', '{}', CURRENT_TIMESTAMP, 'redact')"))
            await connection.run_sync(_migrate, alembic_config(url), "downgrade", "0012")
            assert await connection.run_sync(_privacy_columns) == {"api_keys": False,
                                                                   "teams": False}
            await connection.run_sync(_migrate, alembic_config(url), "upgrade", "head")
            assert await connection.run_sync(_privacy_columns) == {"api_keys": True,
                                                                   "teams": True}
            rows = (await connection.execute(text("SELECT id, privacy FROM teams"))).all()
        assert [tuple(row) for row in rows] == [("team_1", None)]
        await check_current(url)
    finally:
        await engine.dispose()


async def test_key_privacy_migration_down_and_up_on_sqlite(migrated_sqlite: str) -> None:
    """0013 adds api_keys.privacy and teams.privacy on SQLite, and takes them away again
    (rows kept)."""
    await _privacy_down_and_up(migrated_sqlite)


async def test_key_privacy_migration_down_and_up_on_postgres(migrated_pg: str) -> None:
    """0013 adds api_keys.privacy and teams.privacy on Postgres, and takes them away again
    (rows kept)."""
    await _privacy_down_and_up(migrated_pg)


CLASHING_TEAMS = [("team_a", "search"), ("team_b", "SEARCH"), ("team_c", "search "),
                  ("team_d", " Ops"), ("team_e", "x" * 128), ("team_f", "X" * 128),
                  ("team_h", "q"), ("team_i", "Q"), ("team_j", "Q (TEAM_I)")]
"""Teams made before 0019, oldest first: names that clash ignoring case and whitespace (and
one already named what a rename would make)."""


async def _team_names_down_and_up(url: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_migrate, alembic_config(url), "downgrade", "0018")
            for age, (team_id, name) in enumerate(CLASHING_TEAMS):
                await connection.execute(text(
                    "INSERT INTO teams (id, name, budget_period, metadata, created_at) "
                    "VALUES (:id, :name, 'month', '{}', :at)"),
                    {"id": team_id, "name": name, "at": datetime(2026, 1, 1 + age, tzinfo=UTC)})
            await connection.run_sync(_migrate, alembic_config(url), "upgrade", "head")
            rows = (await connection.execute(text("SELECT id, name FROM teams"))).all()
            assert dict(rows) == {
                "team_a": "search", "team_b": "SEARCH (team_b)", "team_c": "search (team_c)",
                "team_d": "Ops", "team_e": "x" * 128, "team_f": "X" * 119 + " (team_f)",
                "team_h": "q", "team_i": "Q (team_i 2)", "team_j": "Q (TEAM_I)"}
            with pytest.raises(IntegrityError):  # the index compares lower(name)
                async with connection.begin_nested():
                    await connection.execute(text(
                        "INSERT INTO teams (id, name, budget_period, metadata, created_at) "
                        "VALUES ('team_g', 'OPS', 'month', '{}', CURRENT_TIMESTAMP)"))
            await connection.run_sync(_migrate, alembic_config(url), "downgrade", "0018")
            await connection.run_sync(_migrate, alembic_config(url), "upgrade", "head")
        await check_current(url)
    finally:
        await engine.dispose()


async def test_team_names_migration_renames_clashes_on_sqlite(migrated_sqlite: str) -> None:
    """0019 on SQLite: of teams whose names clash ignoring case and surrounding whitespace the
    oldest keeps its name (trimmed), the others get their id added; then ``OPS`` is refused."""
    await _team_names_down_and_up(migrated_sqlite)


async def test_team_names_migration_renames_clashes_on_postgres(migrated_pg: str) -> None:
    """0019 on Postgres, as on SQLite."""
    await _team_names_down_and_up(migrated_pg)
