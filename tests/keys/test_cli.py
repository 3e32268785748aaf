"""``switchboard keys`` and ``switchboard teams`` against a SQLite file (and an unmigrated
Postgres): the key printed once and never stored, clean one-line errors (exit 2 for bad usage,
1 for a database missing, unreachable or not migrated), and the change published on Redis."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import redis
from click.testing import CliRunner, Result

from app.keys import CHANNEL
from app.keys.cli import keys, teams
from tests.keys.test_directory import admin_sql


@pytest.fixture
def url(tmp_path: Path) -> str:
    (tmp_path / "keys.db").touch()  # only the embedded default's file is created
    return f"sqlite:///{tmp_path / 'keys.db'}"


def run(group: click.Command, *args: str, url: str,
        env: dict[str, str | None] | None = None) -> Result:
    """``group`` with ``args`` on the database at ``url``, without Redis unless ``env`` says."""
    return CliRunner().invoke(group, [*args, "--database-url", url],
                              env={"SWITCHBOARD_REDIS_URL": None, **(env or {})})


def files_of(tmp_path: Path) -> bytes:
    return b"".join(path.read_bytes() for path in tmp_path.iterdir() if path.is_file())


def test_key_is_printed_once_and_stored_as_a_hash(url: str, tmp_path: Path) -> None:
    """create prints the key on stdout (the id on stderr); list and the database never hold
    it, only its prefix and hash."""
    team = run(teams, "create", "--name", "ops", "--rpm", "100", url=url)
    assert team.exit_code == 0, team.output
    team_id = team.stdout.split()[0]
    created = run(keys, "create", "--name", "bot", "--team", team_id, "--models", "a,b",
                  "--rpm", "10", "--budget-usd", "2.5", "--budget-period", "day",
                  "--expires", "2099-01-01T00:00:00Z", "--admin", url=url)
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert key.startswith("sk-sb-") and "key_" in created.stderr
    listed = run(keys, "list", "--json", url=url)
    record = json.loads(listed.stdout)
    assert record["prefix"] == key[:10] and record["team_id"] == team_id
    assert record["models"] == ["a", "b"] and record["admin"] is True
    assert record["budget_usd"] == 2.5 and record["budget_period"] == "day"
    assert key not in listed.output
    assert key.encode() not in files_of(tmp_path)
    assert key[10:].encode() not in files_of(tmp_path)


def test_update_rotate_revoke_delete(url: str) -> None:
    """A key's life from the command line; none clears a limit."""
    run(keys, "create", "--name", "k", "--rpm", "5", url=url)
    key_id = run(keys, "list", url=url).stdout.split()[0]
    updated = run(keys, "update", key_id, "--rpm", "none", "--tpm", "50", url=url)
    assert updated.exit_code == 0 and "rpm=" not in updated.stdout and "tpm=50" in updated.stdout
    first = json.loads(run(keys, "list", "--json", url=url).stdout)["prefix"]
    rotated = run(keys, "rotate", key_id, url=url)
    assert rotated.exit_code == 0 and rotated.stdout.strip()[:10] != first
    revoked = run(keys, "revoke", key_id, url=url)
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout
    assert run(keys, "delete", key_id, url=url).exit_code == 0
    assert run(keys, "list", url=url).stdout == ""


def test_models_the_config_does_not_serve_are_warned_about(url: str, tmp_path: Path) -> None:
    """With SWITCHBOARD_CONFIG set, --models naming a model that file does not serve makes or
    changes the key anyway, with a warning on stderr; without it nothing is said; a file that
    does not load in this shell (a ${VAR} unset) is said to have left the models unchecked."""
    config = tmp_path / "gateway.yaml"
    config.write_text("providers:\n  m: {type: mock}\n"
                      "models:\n  chat: {targets: [{provider: m, model: x}]}\n")
    env: dict[str, str | None] = {"SWITCHBOARD_CONFIG": str(config)}
    typo = run(keys, "create", "--name", "k", "--models", "chat,chta", url=url, env=env)
    assert typo.exit_code == 0 and typo.stdout.startswith("sk-sb-")
    assert (f"switchboard: warning: models: this gateway does not serve 'chta'; calls to it "
            f"get 404 until it is configured (a typo?) (in {config})") in typo.stderr
    key_id = json.loads(run(keys, "list", "--json", url=url).stdout)["id"]
    fixed = run(keys, "update", key_id, "--models", "chat", url=url, env=env)
    assert fixed.exit_code == 0 and "models=chat" in fixed.stdout and "warning" not in fixed.stderr
    again = run(keys, "update", key_id, "--models", "chta", url=url, env=env)
    assert again.exit_code == 0 and "does not serve 'chta'" in again.stderr
    unset = run(keys, "create", "--name", "k2", "--models", "chta", url=url,
                env={"SWITCHBOARD_CONFIG": None})
    assert unset.exit_code == 0 and "warning" not in unset.stderr
    config.write_text("providers:\n  m: {type: openai, api_key: '${UNSET_IN_THIS_SHELL}'}\n"
                      "models:\n  chat: {targets: [{provider: m, model: x}]}\n")
    unchecked = run(keys, "create", "--name", "k3", "--models", "chta", url=url,
                    env={**env, "UNSET_IN_THIS_SHELL": None})
    assert unchecked.exit_code == 0 and unchecked.stdout.startswith("sk-sb-")
    assert (f"switchboard: warning: --models not checked: {config} does not load here"
            in unchecked.stderr)


def test_teams_create_prints_only_the_id_for_scripts(url: str) -> None:
    """TEAM=$(switchboard teams create ...) is the id alone, ready for --team; the rest goes
    to stderr."""
    made = run(teams, "create", "--name", "scripted", "--rpm", "5", url=url)
    assert made.exit_code == 0 and made.stdout.strip().startswith("team_")
    assert made.stdout.strip() == made.stdout.strip().split()[0]
    assert f"created {made.stdout.strip()}  scripted  rpm=5" in made.stderr
    key = run(keys, "create", "--name", "k", "--team", made.stdout.strip(), url=url)
    assert key.exit_code == 0, key.output


def test_listings_escape_what_could_forge_a_line(url: str) -> None:
    """A name or model holding a newline or an escape (written into the database by hand:
    the admin input refuses them) is listed on one line, escaped."""
    run(keys, "create", "--name", "k", url=url)
    team_id = run(teams, "create", "--name", "t", url=url).stdout.strip()
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        db.execute("UPDATE api_keys SET name = 'evil' || char(10) || 'key_000000000000  "
                   "sk-sb-FAKE...  active  admin-looking' || char(27) || '[31m'")
        db.execute("UPDATE teams SET name = 'x' || char(10) || 'y' WHERE id = ?", (team_id,))
    listed = run(keys, "list", url=url).stdout
    assert listed.count("\n") == 1 and "\x1b" not in listed
    assert "evil\\nkey_000000000000  sk-sb-FAKE...  active  admin-looking\\x1b[31m" in listed
    assert run(teams, "list", url=url).stdout == f"{team_id}  x\\ny\n"


def test_teams_commands(url: str) -> None:
    """teams create, list, update and delete; a team with keys cannot be deleted."""
    team_id = run(teams, "create", "--name", "t", url=url).stdout.split()[0]
    assert "tpm=9" in run(teams, "update", team_id, "--tpm", "9", url=url).stdout
    assert json.loads(run(teams, "list", "--json", url=url).stdout)["name"] == "t"
    run(keys, "create", "--name", "k", "--team", team_id, url=url)
    busy = run(teams, "delete", team_id, url=url)
    assert busy.exit_code == 2 and "still has 1 key" in busy.stderr
    assert run(keys, "list", "--team", team_id, url=url).stdout.count("\n") == 1


def test_privacy_options(url: str) -> None:
    """--privacy on keys and teams, create and update; none clears it; allow is refused."""
    team = run(teams, "create", "--name", "t", "--privacy", "redact", url=url)
    assert team.exit_code == 0 and "privacy=redact" in team.stderr
    team_id = team.stdout.split()[0]
    created = run(keys, "create", "--name", "k", "--team", team_id, "--privacy", "block",
                  url=url)
    assert created.exit_code == 0, created.output
    assert json.loads(run(keys, "list", "--json", url=url).stdout)["privacy"] == "block"
    key_id = run(keys, "list", url=url).stdout.split()[0]
    assert "privacy=block" in run(keys, "list", url=url).stdout
    changed = run(keys, "update", key_id, "--privacy", "private_only", url=url)
    assert "privacy=private_only" in changed.stdout
    assert "privacy=" not in run(keys, "update", key_id, "--privacy", "none", url=url).stdout
    assert "privacy=" not in run(teams, "update", team_id, "--privacy", "none", url=url).stdout
    assert json.loads(run(teams, "list", "--json", url=url).stdout)["privacy"] is None
    refused = run(keys, "update", key_id, "--privacy", "allow", url=url)
    assert refused.exit_code == 2 and "Invalid value for '--privacy'" in refused.stderr


@pytest.mark.parametrize(("args", "says"), [
    (("keys", "create", "--name", "k", "--rpm", "0"), "invalid --rpm"),
    (("keys", "create", "--name", "k", "--expires", "soon"), "invalid --expires"),
    (("keys", "create", "--name", "k", "--expires", "2001-01-01"), "invalid --expires"),
    (("keys", "create", "--name", "k", "--team", "team_nope"), "No team with id"),
    (("keys", "revoke", "key_nope"), "No key with id"),
    (("keys", "update", "key_nope", "--budget-usd", "-1"), "invalid --budget-usd"),
    (("keys", "create", "--name", "k", "--models", ""), "invalid --models: must name at least"),
    (("keys", "update", "key_nope", "--models", " , "), "must name at least one model"),
    (("teams", "delete", "team_nope"), "No team with id"),
])
def test_errors_are_one_line_and_exit_2(url: str, args: tuple[str, ...], says: str) -> None:
    """Bad input or an unknown id: exit status 2 and one line on stderr."""
    group = keys if args[0] == "keys" else teams
    result = run(group, *args[1:], url=url)
    assert result.exit_code == 2
    assert says in result.stderr and result.stderr.count("\n") == 1


@pytest.fixture
def empty_pg() -> Iterator[str]:
    name = f"switchboard_test_keys_{uuid.uuid4().hex[:12]}"
    asyncio.run(admin_sql(f'CREATE DATABASE "{name}"'))
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    asyncio.run(admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_unmigrated_postgres_says_what_to_run(empty_pg: str) -> None:
    """Postgres is not migrated by these commands: they say to run switchboard db upgrade,
    exit 1 (a database not ready, as switchboard db says it)."""
    result = run(keys, "list", url=empty_pg)
    assert result.exit_code == 1 and "switchboard db upgrade" in result.stderr


@pytest.mark.parametrize("args", [("keys", "list"), ("teams", "list"),
                                  ("keys", "create", "--name", "k"), ("prompts", "list")])
def test_a_missing_sqlite_file_is_refused_not_created(tmp_path: Path,
                                                      args: tuple[str, ...]) -> None:
    """A --database-url naming a SQLite file that does not exist (a typo) is refused, exit 1
    as for any database not ready, and nothing is created: a key stored there would be one no
    gateway reads."""
    from app.cli import main

    typo = tmp_path / "swtichboard.db"
    result = CliRunner().invoke(main, [*args, "--database-url", f"sqlite:///{typo}"],
                                env={"SWITCHBOARD_REDIS_URL": None})
    assert result.exit_code == 1, result.output
    assert "there is no database at" in result.stderr and result.stderr.count("\n") == 1
    assert not typo.exists()


def test_the_embedded_default_database_is_still_created(tmp_path: Path) -> None:
    """Without --database-url or SWITCHBOARD_DATABASE_URL, switchboard.db in the current
    directory is created and migrated on the spot, as documented."""
    from app.cli import main

    before = Path.cwd()
    os.chdir(tmp_path)
    try:
        result = CliRunner().invoke(main, ["teams", "create", "--name", "ops"],
                                    env={"SWITCHBOARD_REDIS_URL": None,
                                         "SWITCHBOARD_DATABASE_URL": None})
    finally:
        os.chdir(before)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "switchboard.db").exists()


@pytest.mark.parametrize("args", [("keys", "list"), ("teams", "list"), ("prompts", "list"),
                                  ("drift", "baseline", "list"), ("db", "check")])
def test_an_unreachable_database_is_exit_1_for_every_command(args: tuple[str, ...]) -> None:
    """keys, teams, prompts, drift and db agree (switchboard db's documented statuses): a
    database that cannot be reached is exit 1, bad usage exit 2."""
    from app.cli import main
    from tests.servers import free_port

    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    result = CliRunner().invoke(main, [*args, "--database-url", url],
                                env={"SWITCHBOARD_REDIS_URL": None})
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("switchboard: ") and result.stderr.count("\n") == 1


def test_changes_are_published_on_redis(url: str) -> None:
    """With SWITCHBOARD_REDIS_URL set, a revocation is published (the id, never the key)."""
    client = redis.Redis(host="127.0.0.1", port=6379)
    listener = client.pubsub()  # type: ignore[no-untyped-call, unused-ignore]  # redis-py < 8.2 lacks hints
    listener.subscribe(CHANNEL)
    try:
        key = run(keys, "create", "--name", "k", url=url).stdout.strip()
        key_id = run(keys, "list", url=url).stdout.split()[0]
        env: dict[str, str | None] = {"SWITCHBOARD_REDIS_URL": "redis://127.0.0.1:6379/0"}
        assert run(keys, "revoke", key_id, url=url, env=env).exit_code == 0
        seen: list[bytes] = []
        for _ in range(50):
            message = listener.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message is not None:
                seen.append(message["data"])
            if any(key_id.encode() in data for data in seen):
                break
        assert {"key_id": key_id, "team_id": None} in [json.loads(d) for d in seen]
        assert not any(key.encode() in data for data in seen)
    finally:
        listener.close()
        client.close()
