"""``switchboard keys ...`` and ``switchboard teams ...``: manage virtual keys and teams in the
database directly (no running gateway needed).

The database is ``--database-url``, else ``SWITCHBOARD_DATABASE_URL``, else the embedded SQLite
file, which is created and migrated on the spot; another SQLite file must exist already (a
mistyped path is refused, not a new empty database), and is migrated on the spot; Postgres must
be migrated first (``switchboard db upgrade``). After a change the ids concerned are published
on Redis (``SWITCHBOARD_REDIS_URL``) so running gateways drop their cached copy within a second;
without Redis they pick the change up at their next refresh (30 s). A key moved to another team,
or a key or team given limits where it had none or another budget period, keeps what it spent:
with Redis, its spend counters are raised before the change is published
(``KeyDirectory.update_key``), as the admin API does; without, each gateway carries them itself
when it picks the change up. A new or rotated key is printed once and never again.

With ``SWITCHBOARD_CONFIG`` set, ``--models`` naming a model that config does not serve is
warned about on stderr (the key is made or changed anyway), and so is a config that does not
load in this shell (a ``${VAR}`` unset here, say), since then nothing was checked.

Limits given as ``none`` (``--rpm none``) are cleared by ``update``; so is a privacy setting
(``--privacy none``). Exit status, as ``switchboard db``'s: 0 done, 1 the database refused, is
unreachable, missing or not migrated, 2 bad usage (a bad value, an unknown id, a name taken, an
unusable URL); one line on stderr.

(Just past 400 lines: the two command groups share their option parsing, error mapping and
directory set-up, which a split would have to import back from one another.)
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from app.db.cli import database_url_option
from app.scrub import one_line
from app.settings import Settings

if TYPE_CHECKING:
    from pydantic import BaseModel

    from app.keys.directory import KeyDirectory
    from app.keys.model import KeyRecord, TeamRecord

T = TypeVar("T")
M = TypeVar("M", bound="BaseModel")
F = TypeVar("F", bound=Callable[..., Any])
NONE = "none"


def _fail(message: str, *, status: int = 2) -> NoReturn:
    click.echo(f"switchboard: {message}", err=True)
    sys.exit(status)


async def prepare_database(url: str) -> None:
    """A SQLite database migrated on the spot, Postgres checked current (``MigrationError``
    if not). A SQLite file other than the embedded default's (``switchboard.db``) must exist:
    a mistyped ``--database-url`` is ``SchemaNotReady`` naming it, nothing created."""
    from app.db.engine import is_sqlite
    from app.db.migrate import check_current, upgrade

    if not is_sqlite(url):
        await check_current(url)
        return
    if await asyncio.to_thread(_missing_file, url):
        await check_current(url)  # raises SchemaNotReady: "there is no database at ..."
    await upgrade(url)


def _missing_file(url: str) -> bool:
    """Whether the SQLite ``url`` names a file that does not exist, other than the embedded
    default's."""
    from pathlib import Path

    from sqlalchemy.engine import make_url

    from app.db.engine import sqlite_file

    database = sqlite_file(make_url(url))
    default = sqlite_file(make_url(Settings.model_fields["database_url"].default))
    return database is not None and default is not None and not Path(database).exists() \
        and Path(database).resolve() != Path(default).resolve()


async def _with_directory(url: str, action: Callable[[KeyDirectory], Awaitable[T]]) -> T:
    """Run ``action`` on a directory over ``url`` (SQLite migrated first, Postgres checked),
    publishing changes on Redis when it is configured."""
    import redis.asyncio as aioredis

    from app.db.engine import make_engine
    from app.keys.directory import KeyDirectory
    from app.keys.store import KeyStore

    await prepare_database(url)
    redis_url = Settings().redis_url or None
    try:
        redis = None if redis_url is None else aioredis.from_url(
            redis_url, socket_connect_timeout=1.0, socket_timeout=2.0)
    except ValueError as exc:
        _fail(f"SWITCHBOARD_REDIS_URL: {exc}")
    engine = make_engine(url)
    try:
        return await action(KeyDirectory(KeyStore(engine), redis))
    finally:
        if redis is not None:
            await redis.aclose()
        await engine.dispose()


def _run(database_url: str | None, action: Callable[[KeyDirectory], Awaitable[T]]) -> T:
    """``action`` run to completion; every expected failure becomes one line: exit 2 for bad
    usage, 1 for a database that refused or is not ready."""
    from app import errors
    from app.db.engine import DATABASE_ERRORS, UnsupportedDatabaseUrl, describe_error
    from app.db.migrate import MigrationError

    url = database_url if database_url is not None else Settings().database_url
    try:
        return asyncio.run(_with_directory(url, action))
    except errors.GatewayError as exc:
        _fail(exc.message, status=1 if exc.status >= 500 else 2)
    except UnsupportedDatabaseUrl as exc:
        _fail(str(exc))
    except MigrationError as exc:
        _fail(str(exc), status=1)
    except BrokenPipeError:
        # Our reader closed stdout (``| head``), not the database (an OSError too): click
        # exits quietly, as Unix tools do.
        raise
    except DATABASE_ERRORS as exc:
        _fail(f"the database refused: {describe_error(exc)}", status=1)


def _number(text: str | None, kind: Callable[[str], Any]) -> Any:
    if text is None or text.lower() == NONE:
        return None
    try:
        return kind(text)
    except ValueError:
        return text  # pydantic names the field in its error


def _fields(**options: Any) -> dict[str, Any]:
    """The options given on the command line, as admin input fields (``none`` -> null)."""
    fields: dict[str, Any] = {}
    for name, value in options.items():
        if value is None:
            continue
        if name in {"rpm", "tpm"}:
            fields[name] = _number(value, int)
        elif name == "budget_usd":
            fields[name] = _number(value, float)
        elif name == "models":
            fields[name] = (None if value.lower() == NONE
                            else [m.strip() for m in value.split(",") if m.strip()])
        elif name in {"expires_at", "team_id", "privacy"}:
            fields[name] = None if value.lower() == NONE else value
        else:
            fields[name] = value
    return fields


def _limit_options(command: F) -> F:
    for option in reversed([
        click.option("--rpm", metavar="N", help="Requests per minute (none: no limit)."),
        click.option("--tpm", metavar="N", help="Tokens per minute (none: no limit)."),
        click.option("--budget-usd", "budget_usd", metavar="USD",
                     help="Budget per period in USD (none: no budget)."),
        click.option("--budget-period", "budget_period",
                     type=click.Choice(["day", "month", "total"]),
                     help="Period the budget resets over (create: default month; update: "
                          "kept when not given)."),
        click.option("--privacy", type=click.Choice(["redact", "private_only", "block", NONE]),
                     help="The privacy action calls run under at least: it tightens each "
                          "model's policy, never loosens it (none: the model's own)."),
    ]):
        command = option(command)
    return command


def _key_options(command: F) -> F:
    for option in reversed([
        click.option("--team", "team_id", metavar="ID", help="Team id (none: no team)."),
        click.option("--models", metavar="A,B",
                     help="Public models the key may use, comma-separated (none: all)."),
        click.option("--expires", "expires_at", metavar="WHEN",
                     help="Expiry: ISO 8601 (naive = UTC) or epoch seconds (none: never)."),
    ]):
        command = option(command)
    return _limit_options(command)


def _show_key(record: KeyRecord) -> str:
    from app.cli import table_time

    limits = " ".join(f"{name}={value}" for name, value in (
        ("team", record.team_id), ("rpm", record.rpm), ("tpm", record.tpm),
        ("budget", None if record.budget_usd is None
         else f"{record.budget_usd:g}/{record.budget_period}"),
        ("privacy", record.privacy),
        ("expires", None if record.expires_at is None else table_time(record.expires_at)),
        ("models", None if record.models is None else ",".join(record.models)))
        if value is not None)
    status = record.problem(time.time()) or "active"
    admin = " admin" if record.admin else ""
    return one_line(
        f"{record.id}  {record.prefix}...  {status}{admin}  {record.name}  {limits}".rstrip())


def _show_team(team: TeamRecord) -> str:
    limits = " ".join(f"{name}={value}" for name, value in (
        ("rpm", team.rpm), ("tpm", team.tpm),
        ("budget", None if team.budget_usd is None
         else f"{team.budget_usd:g}/{team.budget_period}"),
        ("privacy", team.privacy)) if value is not None)
    return one_line(f"{team.id}  {team.name}  {limits}".rstrip())


def _print_secret(record: KeyRecord, plaintext: str, verb: str) -> None:
    click.echo(f"{verb} {record.id} ({record.name}). The key, shown only this once:", err=True)
    click.echo(plaintext)


def _warn_unserved(models: list[str] | tuple[str, ...] | None) -> None:
    """Say on stderr when ``models`` names a model the gateway's config file
    (``SWITCHBOARD_CONFIG``, when set and valid) does not serve; the change is made anyway."""
    config_path = Settings().config
    if not models or config_path is None:
        return
    from app.config import ConfigError, load_config
    from app.keys.model import unserved
    from app.settings import environment

    try:
        served = load_config(config_path, environment()).models
    except ConfigError as exc:  # the key is made; check-config says what is wrong with the file
        first = str(exc).splitlines()[0] if str(exc) else "invalid"
        click.echo(f"switchboard: warning: --models not checked: {config_path} does not load "
                   f"here ({first[:200]})", err=True)
        return
    warning = unserved(models, served.__contains__)
    if warning is not None:
        click.echo(f"switchboard: warning: {warning} (in {config_path})", err=True)


def _parse(model: type[M], fields: dict[str, Any]) -> M:
    """``fields`` validated as ``model``; a bad one ends the command naming its option."""
    from app import errors
    from app.keys.model import parse

    try:
        return parse(model, fields)
    except errors.InvalidRequest as exc:
        option = f"--{exc.param.split('.')[0].replace('_', '-')}" if exc.param else "input"
        option = _OPTION_NAMES.get(option, option)
        _fail(f"invalid {option}: {exc.message.partition(': ')[2] or exc.message}")


_OPTION_NAMES = {"--team-id": "--team", "--expires-at": "--expires"}


# ---- keys


@click.group("keys", context_settings={"help_option_names": ["-h", "--help"]})
def keys() -> None:
    """Create, list, change, rotate and revoke virtual keys."""


@keys.command("create")
@click.option("--name", required=True, help="A name for people (1-128 characters).")
@_key_options
@click.option("--admin", is_flag=True, help="The key may use the admin API.")
@database_url_option
def create_key(database_url: str | None, admin: bool, **options: Any) -> None:
    """Create a key and print it (this once) on stdout; its id goes to stderr."""
    from app.keys.model import KeyCreate

    spec = _parse(KeyCreate, {**_fields(**options), "admin": admin})

    async def action(directory: KeyDirectory) -> tuple[KeyRecord, str]:
        return await directory.store.create_key(spec)

    record, plaintext = _run(database_url, action)
    _print_secret(record, plaintext, "created")
    _warn_unserved(spec.models)


@keys.command("list")
@click.option("--team", "team_id", metavar="ID", help="Only this team's keys.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@database_url_option
def list_keys(database_url: str | None, team_id: str | None, as_json: bool) -> None:
    """List keys, oldest first (never the keys themselves: their prefix)."""

    async def action(directory: KeyDirectory) -> list[KeyRecord]:
        return await directory.store.list_keys(team_id=team_id)

    now = time.time()
    for record in _run(database_url, action):
        click.echo(json.dumps(record.to_json(now)) if as_json else _show_key(record))


@keys.command("update")
@click.argument("key_id")
@click.option("--name", help="A new name.")
@_key_options
@click.option("--admin/--no-admin", default=None, help="Allow or refuse the admin API.")
@database_url_option
def update_key(key_id: str, database_url: str | None, admin: bool | None,
               **options: Any) -> None:
    """Change a key's name, team, models, limits, budget, privacy or expiry (none clears)."""
    from app.keys.model import KeyUpdate

    fields = _fields(**options)
    if admin is not None:
        fields["admin"] = admin
    spec = _parse(KeyUpdate, fields)

    async def action(directory: KeyDirectory) -> KeyRecord:
        return await directory.update_key(key_id, spec)

    click.echo(_show_key(_run(database_url, action)))
    _warn_unserved(spec.models)


@keys.command("rotate")
@click.argument("key_id")
@database_url_option
def rotate_key(key_id: str, database_url: str | None) -> None:
    """Give a key a new secret (printed once); the old one stops working."""

    async def action(directory: KeyDirectory) -> tuple[KeyRecord, str]:
        rotated = await directory.store.rotate_key(key_id)
        await directory.changed(key_id=key_id)
        return rotated

    record, plaintext = _run(database_url, action)
    _print_secret(record, plaintext, "rotated")


@keys.command("revoke")
@click.argument("key_id")
@database_url_option
def revoke_key(key_id: str, database_url: str | None) -> None:
    """Revoke a key: its calls are refused from now on (the record stays)."""

    async def action(directory: KeyDirectory) -> KeyRecord:
        record = await directory.store.revoke_key(key_id)
        await directory.changed(key_id=key_id)
        return record

    click.echo(_show_key(_run(database_url, action)))


@keys.command("delete")
@click.argument("key_id")
@database_url_option
def delete_key(key_id: str, database_url: str | None) -> None:
    """Delete a key's record entirely."""

    async def action(directory: KeyDirectory) -> KeyRecord:
        record = await directory.store.delete_key(key_id)
        await directory.changed(key_id=key_id)
        return record

    click.echo(f"deleted {_run(database_url, action).id}")


# ---- teams


@click.group("teams", context_settings={"help_option_names": ["-h", "--help"]})
def teams() -> None:
    """Create, list, change and delete teams (limits, budgets and a privacy setting their keys
    share)."""


@teams.command("create")
@click.option("--name", required=True, help="A unique name (1-128 characters).")
@_limit_options
@database_url_option
def create_team(database_url: str | None, **options: Any) -> None:
    """Create a team and print its id on stdout (what it was made with goes to stderr)."""
    from app.keys.model import TeamCreate

    spec = _parse(TeamCreate, _fields(**options))

    async def action(directory: KeyDirectory) -> TeamRecord:
        return await directory.store.create_team(spec)

    team = _run(database_url, action)
    click.echo(f"created {_show_team(team)}", err=True)
    click.echo(team.id)


@teams.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@database_url_option
def list_teams(database_url: str | None, as_json: bool) -> None:
    """List teams, oldest first."""

    async def action(directory: KeyDirectory) -> list[TeamRecord]:
        return await directory.store.list_teams()

    for team in _run(database_url, action):
        click.echo(json.dumps(team.to_json()) if as_json else _show_team(team))


@teams.command("update")
@click.argument("team_id")
@click.option("--name", help="A new unique name.")
@_limit_options
@database_url_option
def update_team(team_id: str, database_url: str | None, **options: Any) -> None:
    """Change a team's name, limits, budget or privacy (none clears)."""
    from app.keys.model import TeamUpdate

    spec = _parse(TeamUpdate, _fields(**options))

    async def action(directory: KeyDirectory) -> TeamRecord:
        return await directory.update_team(team_id, spec)

    click.echo(_show_team(_run(database_url, action)))


@teams.command("delete")
@click.argument("team_id")
@database_url_option
def delete_team(team_id: str, database_url: str | None) -> None:
    """Delete a team that has no keys left."""

    async def action(directory: KeyDirectory) -> TeamRecord:
        team = await directory.store.delete_team(team_id)
        await directory.changed(team_id=team_id)
        return team

    click.echo(f"deleted {_run(database_url, action).id}")
