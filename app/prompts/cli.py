"""``switchboard prompts ...``: prompt templates in the database directly (no running gateway
needed), through the same ``PromptStore`` the admin API uses.

The database is ``--database-url``, else ``SWITCHBOARD_DATABASE_URL``, else the embedded SQLite
file, which is created and migrated on the spot; another SQLite file must exist already (a
mistyped path is refused, not a new empty database); Postgres must be migrated first
(``switchboard db upgrade``). Running gateways see a moved label within
``app.prompts.library.LABEL_TTL_S`` seconds; new versions at once (they are read when first
asked for).

Files (``create``, ``version``, ``sync``) are YAML in the format of ``app.prompts.sync``. Their
``params`` are held to the ``limits`` of the gateway's config file (``SWITCHBOARD_CONFIG``, when
set; one that does not load here is a warning, and they go unchecked), as the admin API holds
them to its own. Exit status, as ``switchboard db``'s and ``keys``': 0 done, 1 the database
refused, is unreachable, missing or not migrated, 2 bad usage (a bad value or file, an unknown
template or version); one line on stderr.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

import click

from app.db.cli import database_url_option
from app.prompts.model import MAX_VERSION
from app.settings import Settings

if TYPE_CHECKING:
    from app.prompts.model import LabelEvent
    from app.prompts.store import PromptStore
    from app.prompts.sync import TemplateFile

T = TypeVar("T")
VERSION = click.IntRange(min=1, max=MAX_VERSION)
"""A version number, bounded as the admin API bounds it (past it: a usage error, exit 2)."""


def _fail(message: str, *, status: int = 2) -> NoReturn:
    click.echo(f"switchboard: {message}", err=True)
    sys.exit(status)


async def _with_store(url: str, action: Callable[[PromptStore], Awaitable[T]]) -> T:
    from app.db.engine import make_engine
    from app.keys.cli import prepare_database
    from app.prompts.store import PromptStore

    await prepare_database(url)
    engine = make_engine(url)
    try:
        return await action(PromptStore(engine))
    finally:
        await engine.dispose()


def _run(database_url: str | None, action: Callable[[PromptStore], Awaitable[T]]) -> T:
    """``action`` run to completion; every expected failure becomes one line: exit 2 for bad
    usage, 1 for a database that refused or is not ready."""
    from app import errors
    from app.db.engine import DATABASE_ERRORS, UnsupportedDatabaseUrl, describe_error
    from app.db.migrate import MigrationError
    from app.prompts.sync import SyncError

    url = database_url if database_url is not None else Settings().database_url
    try:
        return asyncio.run(_with_store(url, action))
    except errors.GatewayError as exc:
        _fail(exc.message, status=1 if exc.status >= 500 else 2)
    except (UnsupportedDatabaseUrl, SyncError) as exc:
        _fail(str(exc))
    except MigrationError as exc:
        _fail(str(exc), status=1)
    except BrokenPipeError:
        # Our reader closed stdout (``| head``), not the database (an OSError too): click
        # exits quietly, as Unix tools do.
        raise
    except DATABASE_ERRORS as exc:
        _fail(f"the database refused: {describe_error(exc)}", status=1)


def _check_limits(files: list[TemplateFile]) -> None:
    """``SyncError`` for ``params`` that the gateway's config file (``SWITCHBOARD_CONFIG``)
    refuses on every call; with no such file nothing is checked, and a warning when it does
    not load here."""
    config_path = Settings().config
    if config_path is None or not any(v.params for f in files for v in f.versions):
        return
    from app.config import ConfigError, load_config
    from app.prompts.sync import check_limits
    from app.settings import environment

    try:
        limits = load_config(config_path, environment()).limits
    except ConfigError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "invalid"
        click.echo(f"switchboard: warning: params not checked against the gateway's limits: "
                   f"{config_path} does not load here ({first[:200]})", err=True)
        return
    check_limits(files, max_n=limits.max_n, max_tokens=limits.max_tokens)


@click.group("prompts", context_settings={"help_option_names": ["-h", "--help"]})
def prompts() -> None:
    """Versioned prompt templates: list, show, create, add versions, move labels, sync."""


@prompts.command("list")
@database_url_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_templates(database_url: str | None, as_json: bool) -> None:
    """Every template: id, latest version, labels."""
    async def action(store: PromptStore) -> None:
        for record in await store.list_templates():
            if as_json:
                click.echo(json.dumps(record.summary()))
                continue
            labels = " ".join(f"{k}={v}" for k, v in sorted(record.labels.items()))
            click.echo(f"{record.id}  v{record.latest_version}  {labels}".rstrip())
    _run(database_url, action)


@prompts.command("show")
@click.argument("template_id")
@click.option("--version", "number", type=VERSION,
              help="One version (default: the whole template).")
@database_url_option
def show(template_id: str, number: int | None, database_url: str | None) -> None:
    """A template (every version, labels, label history) or one version, as JSON."""
    async def action(store: PromptStore) -> None:
        if number is not None:
            body = (await store.get_version(template_id, number)).to_json()
        else:
            body = (await store.get_template(template_id)).to_json()
        click.echo(json.dumps(body, indent=2, ensure_ascii=False))
    _run(database_url, action)


@prompts.command("create")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@database_url_option
def create(path: Path, database_url: str | None) -> None:
    """Create a template from a YAML file, with all its versions and labels (fails if its id
    exists: use sync or version)."""
    from app.prompts.sync import create_file, read_file

    async def action(store: PromptStore) -> None:
        file = read_file(path)
        _check_limits([file])
        for line in await create_file(store, file):
            click.echo(line)
    _run(database_url, action)


@prompts.command("version")
@click.argument("template_id")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@database_url_option
def version(template_id: str, path: Path, database_url: str | None) -> None:
    """Add the body of a YAML file as the template's next version, and move the labels the
    file names as sync does (one transaction). A file whose id names another template, or
    that lists several versions, is refused."""
    from app.prompts.sync import read_file, version_file

    async def action(store: PromptStore) -> None:
        file = read_file(path)
        _check_limits([file])
        for line in await version_file(store, template_id, file):
            click.echo(line)
    _run(database_url, action)


@prompts.command("label")
@click.argument("template_id")
@click.argument("label")
@click.argument("number", type=VERSION, metavar="VERSION")
@database_url_option
def label(template_id: str, label: str, number: int, database_url: str | None) -> None:
    """Point LABEL of a template at VERSION (already there: nothing changes)."""
    from app.prompts.model import check_label

    try:
        check_label(label)
    except ValueError as exc:
        _fail(str(exc))

    async def action(store: PromptStore) -> None:
        event = await store.set_label(template_id, label, number)
        click.echo(_moved(template_id, event))
    _run(database_url, action)


@prompts.command("rollback")
@click.argument("template_id")
@click.argument("label")
@click.option("--to", "number", type=VERSION,
              help="The version (default: where the label pointed before its last move).")
@database_url_option
def rollback(template_id: str, label: str, number: int | None,
             database_url: str | None) -> None:
    """Move LABEL back."""
    async def action(store: PromptStore) -> None:
        event = await store.rollback(template_id, label, number)
        click.echo(_moved(template_id, event))
    _run(database_url, action)


def _moved(template_id: str, event: LabelEvent) -> str:
    """What a label move did, one line (``(new)`` for a label that pointed nowhere before)."""
    if not event.changed:
        return f"{template_id}: {event.label} is at {event.to_version} already (unchanged)"
    rollback = " (rollback)" if event.rollback else ""
    was = "(new)" if event.from_version is None else event.from_version
    return f"{template_id}: {event.label} {was} -> {event.to_version}{rollback}"


@prompts.command("diff")
@click.argument("template_id")
@click.argument("old", type=VERSION)
@click.argument("new", type=VERSION)
@database_url_option
def diff(template_id: str, old: int, new: int, database_url: str | None) -> None:
    """What changed from version OLD to version NEW: the messages as a unified diff, then
    each other field that differs."""
    from app.prompts.diff import diff as diff_versions

    async def action(store: PromptStore) -> None:
        result = diff_versions(await store.get_version(template_id, old),
                               await store.get_version(template_id, new))
        if result["messages"]:
            click.echo(result["messages"])
        for name, change in result["fields"].items():
            click.echo(f"{name}: {json.dumps(change['from'])} -> {json.dumps(change['to'])}")
    _run(database_url, action)


@prompts.command("sync")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@database_url_option
def sync(directory: Path, database_url: str | None) -> None:
    """Bring the database in line with a directory of YAML template files (idempotent: a
    second run changes nothing). Prints what it changed, or "up to date"."""
    from app.prompts.sync import read_dir, sync_files

    async def action(store: PromptStore) -> None:
        files = read_dir(directory)
        _check_limits(files)
        done = await sync_files(store, files)  # all validated, then one transaction
        for line in done:
            click.echo(line)
        if not done:
            click.echo("up to date")
    _run(database_url, action)
