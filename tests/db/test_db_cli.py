"""``switchboard db upgrade|check|prune`` run as an operator runs them, in a subprocess."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from app.calllog.postgres import PostgresStore
from app.calllog.sqlite import SqliteStore
from app.db.engine import make_engine
from app.db.migrate import head_revisions
from tests.db.rows import batch, epoch
from tests.servers import free_port

SWITCHBOARD = str(Path(sys.executable).with_name("switchboard"))
DB = [SWITCHBOARD, "db"]


def db(*args: str, env: dict[str, str] | None = None,
       cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``switchboard db ARGS`` with no SWITCHBOARD_ settings but those in ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    return subprocess.run([*DB, *args], env={**clean, **(env or {})}, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_help_lists_the_commands() -> None:
    """``db --help`` names upgrade, check and prune; ``prune --help`` explains durations."""
    listing = db("--help")
    assert listing.returncode == 0
    for command in ("upgrade", "check", "prune"):
        assert command in listing.stdout
    assert "90d" in db("prune", "--help").stdout


async def test_upgrade_check_and_prune_on_a_fresh_postgres(fresh_pg: str) -> None:
    """On a new database: check fails, upgrade succeeds (twice), check passes, prune drops
    an old partition (after a dry run that drops nothing)."""
    refused = db("check", "--database-url", fresh_pg)
    assert refused.returncode == 1
    assert "switchboard db upgrade" in refused.stderr
    for _ in range(2):
        upgraded = db("upgrade", "--database-url", fresh_pg)
        assert upgraded.returncode == 0, upgraded.stderr
        assert f"schema revision {head_revisions()[0]}" in upgraded.stdout
    assert db("check", "--database-url", fresh_pg).returncode == 0

    engine = make_engine(fresh_pg)
    try:
        await PostgresStore(engine).write(batch(3, created_at=epoch(2019, 3)))
        dry = db("prune", "--older-than", "90d", "--dry-run", "--database-url", fresh_pg)
        assert dry.returncode == 0
        assert "would remove calls_2019_03" in dry.stdout
        pruned = db("prune", "--older-than", "90d", "--database-url", fresh_pg)
        assert pruned.returncode == 0
        assert "removed calls_2019_03" in pruned.stdout
        async with engine.connect() as connection:
            left = (await connection.execute(text("SELECT to_regclass('calls_2019_03')")))
            assert left.scalar() is None
    finally:
        await engine.dispose()


def test_check_and_prune_create_no_sqlite_file(tmp_path: Path) -> None:
    """A SQLite path with no file: check and prune say so, exit 1, and leave no file behind
    (a mistyped path used to become an empty database)."""
    missing = tmp_path / "typo.db"
    for args in (["check"], ["prune", "--older-than", "90d"]):
        refused = db(*args, "--database-url", f"sqlite:///{missing}")
        assert refused.returncode == 1, refused.stdout
        assert "there is no database at" in refused.stderr
        assert "switchboard db upgrade" in refused.stderr
        assert not missing.exists()
    assert db("upgrade", "--database-url", f"sqlite:///{missing}").returncode == 0
    assert db("check", "--database-url", f"sqlite:///{missing}").returncode == 0


def test_upgrade_uses_the_environment_url(tmp_path: Path) -> None:
    """Without --database-url the command migrates SWITCHBOARD_DATABASE_URL."""
    database = tmp_path / "env.db"
    result = db("upgrade", env={"SWITCHBOARD_DATABASE_URL": f"sqlite:///{database}"})
    assert result.returncode == 0, result.stderr
    assert database.exists()


def test_default_is_the_embedded_sqlite_file(tmp_path: Path) -> None:
    """With no URL at all, the SQLite file in the current directory is migrated."""
    assert db("upgrade", cwd=tmp_path).returncode == 0
    assert (tmp_path / "switchboard.db").exists()


def test_an_empty_environment_url_counts_as_unset(tmp_path: Path) -> None:
    """``SWITCHBOARD_DATABASE_URL=`` (empty, as env files leave it) is the default SQLite
    file, not an error."""
    result = db("upgrade", env={"SWITCHBOARD_DATABASE_URL": ""}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "switchboard.db").exists()


def test_unreachable_database_fails_without_leaking_the_password() -> None:
    """An unreachable database exits 1 with a message naming it, password masked."""
    url = f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/calls"
    result = db("upgrade", "--database-url", url)
    assert result.returncode == 1
    assert "could not upgrade the database at postgresql://postgres:***@" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


def test_a_password_in_the_query_is_masked_too() -> None:
    """``?password=`` (which asyncpg takes) is masked in the command's message as well."""
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/calls?password=SuperSecretPw123"
    result = db("upgrade", "--database-url", url)
    assert result.returncode == 1
    assert "/calls?password=***: " in result.stderr
    assert "SuperSecretPw123" not in result.stderr + result.stdout


def test_bad_arguments_exit_2() -> None:
    """A bad duration or an unsupported URL is a usage error."""
    assert db("prune", "--older-than", "soon").returncode == 2
    unsupported = db("upgrade", "--database-url", "mysql://u:hunter2@h/db")
    assert unsupported.returncode == 2
    assert "hunter2" not in unsupported.stderr


async def test_prune_hours_older_than_removes_the_old_call_hours(tmp_path: Path) -> None:
    """``--hours-older-than`` removes the call hours that ended that long ago (after a dry run
    that counts them), keeps the newer ones, and must be at least ``--older-than``."""
    url = f"sqlite:///{tmp_path / 'hours.db'}"
    assert db("upgrade", "--database-url", url).returncode == 0
    engine = make_engine(url)
    try:
        await SqliteStore(engine).write([*batch(2, created_at=epoch(2019, 3)),
                                         *batch(1, created_at=time.time())])
        short = db("prune", "--older-than", "90d", "--hours-older-than", "30d",
                   "--database-url", url)
        assert short.returncode == 2 and "--hours-older-than" in short.stderr
        dry = db("prune", "--older-than", "90d", "--hours-older-than", "400d", "--dry-run",
                 "--database-url", url)
        assert dry.returncode == 0, dry.stderr
        assert "would remove calls (2 rows), call_hours (1 rows)" in dry.stdout
        pruned = db("prune", "--older-than", "90d", "--hours-older-than", "400d",
                    "--database-url", url)
        assert pruned.returncode == 0, pruned.stderr
        assert "removed calls (2 rows), call_hours (1 rows)" in pruned.stdout
        async with engine.connect() as connection:
            hours = (await connection.execute(text("SELECT hour FROM call_hours"))).scalars()
            assert [h[:4] for h in hours] == [time.strftime("%Y", time.gmtime())]
    finally:
        await engine.dispose()


MALFORMED = {
    "port out of range": ("postgresql://postgres:Sekr3tPw@127.0.0.1:99999/calls",
                          "99999/calls is not between 1 and 65535"),
    "port not a number": ("postgresql://postgres:Sekr3tPw@127.0.0.1:abc/calls", "unreadable"),
    "unsupported scheme": ("mysql://u:Sekr3tPw@h/y", "unsupported database URL"),
    "unclosed IPv6": ("postgresql://postgres:Sekr3tPw@[::1/calls", "unreadable"),
    "'@' and ':' in the password": (
        "postgresql+asyncpg://switchboard:Xy7@Qz:Pw9Leak@postgres:5432/switchboard",
        "unreadable"),
    "SQLite in a missing directory": ("sqlite:////nonexistent/dir/x.db",
                                      "in a directory that does not exist"),
    "a SQLite URI filename in a missing directory": (
        "sqlite:///file:/nonexistent/dir/x.db?uri=true", "in a directory that does not exist"),
}


def test_a_sqlite_uri_filename_is_migrated_in_its_file(tmp_path: Path) -> None:
    """``sqlite:///file:sub/calls.db?uri=true`` (SQLite's URI filenames) names ``sub/calls.db``:
    its migration lock goes beside it (it was looked for at ``file:sub/...``: a traceback)."""
    (tmp_path / "sub").mkdir()
    url = f"sqlite+aiosqlite:///file:{tmp_path / 'sub' / 'calls.db'}?uri=true"
    result = db("upgrade", "--database-url", url)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == [
        "calls.db", "calls.db.migrate.lock"]


@pytest.mark.parametrize(("url", "says"), list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_malformed_url_is_one_line_and_exit_2(url: str, says: str, tmp_path: Path) -> None:
    """A malformed database URL makes ``serve`` and every ``db`` command print one
    ``switchboard:`` line saying what is wrong and exit 2: no traceback, no part of the
    password."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    serve = subprocess.run(
        [SWITCHBOARD, "serve", "--port", str(free_port())], cwd=tmp_path, capture_output=True,
        text=True, timeout=60, env={**clean, "SWITCHBOARD_DATABASE_URL": url})
    runs = [serve, db("upgrade", "--database-url", url), db("check", "--database-url", url),
            db("prune", "--older-than", "90d", "--database-url", url)]
    for result in runs:
        assert result.returncode == 2, result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("switchboard: "), result.stderr
        assert says in lines[0]
        assert not any(secret in result.stderr + result.stdout
                       for secret in ("Sekr3tPw", "Qz", "Pw9Leak"))


def test_upgrade_refuses_a_schema_from_a_newer_switchboard(tmp_path: Path) -> None:
    """``db upgrade`` of a database a newer switchboard migrated, whose schema floor is above
    this code, says so, as ``db check`` does (status 1, one line), and ``serve`` on such an
    embedded SQLite file exits 2 with the same line."""
    url = f"sqlite:///{tmp_path / 'newer.db'}"
    assert db("upgrade", "--database-url", url).returncode == 0
    connection = sqlite3.connect(tmp_path / "newer.db")
    connection.execute("UPDATE alembic_version SET version_num = '9999'")
    connection.execute("UPDATE schema_floor SET revision = '9999'")  # it needs itself
    connection.commit()
    connection.close()
    says = ("has schema revision 9999, newer than this version of switchboard knows, and it "
            "needs switchboard at schema revision 9999 or newer (this one is at "
            f"{head_revisions()[0]}): upgrade switchboard")
    for command in ("check", "upgrade"):
        result = db(command, "--database-url", url)
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith("switchboard: ") and says in result.stderr
        assert "Traceback" not in result.stderr
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    serve = subprocess.run(
        [SWITCHBOARD, "serve", "--port", str(free_port())], cwd=tmp_path, capture_output=True,
        text=True, timeout=60, env={**clean, "SWITCHBOARD_DATABASE_URL": url})
    assert serve.returncode == 2
    assert serve.stderr.splitlines()[-1] == f"switchboard: the database at {url} {says}"
    assert "Traceback" not in serve.stderr


def test_serve_on_an_unmigratable_sqlite_file_is_one_line(tmp_path: Path) -> None:
    """``serve`` on an embedded SQLite file whose migration fails exits 2 with the reason in
    one line (the file left as it was), not a start-up traceback calling it unreachable."""
    url = f"sqlite:///{tmp_path / 'half.db'}"
    connection = sqlite3.connect(tmp_path / "half.db")
    connection.execute("CREATE TABLE calls (x INTEGER)")  # what the first migration creates
    connection.commit()
    connection.close()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    serve = subprocess.run(
        [SWITCHBOARD, "serve", "--port", str(free_port())], cwd=tmp_path, capture_output=True,
        text=True, timeout=60, env={**clean, "SWITCHBOARD_DATABASE_URL": url})
    assert serve.returncode == 2
    assert serve.stderr.splitlines()[-1] == (
        f"switchboard: could not upgrade the database at {url}, which is left as it was: "
        "OperationalError: table calls already exists")
    assert "Traceback" not in serve.stderr and "nreachable" not in serve.stderr
