"""``switchboard db ...``: the call log's database schema, from the command line.

Attached to the main command with ``main.add_command(db)``; also runs alone as
``python -m app.db.cli``. Exit status: 0 done, 1 the database refused or is not ready, 2 bad usage
(click's own, or an unusable URL).
"""

from __future__ import annotations

import asyncio
import re
import sys
from datetime import timedelta
from typing import NoReturn

import click

from app.settings import Settings

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``45s`` or ``2w`` as a positive ``timedelta`` of at most
    ``MAX_DURATION``.

    Raises ``ValueError`` with an example of the expected form."""
    match = _DURATION.match(text)
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a positive duration like 90d, 12h, 30m, 45s or 2w")
    try:
        duration = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        duration = MAX_DURATION + timedelta(days=1)
    if duration > MAX_DURATION:
        raise ValueError(f"{text!r} is longer than {MAX_DURATION.days // 365} years")
    return duration


MAX_DURATION = timedelta(days=100 * 365)
"""The longest duration taken: a century (every moment it reaches back to is a date; a call
log holds nothing older)."""


def _duration_option(_ctx: click.Context, _param: click.Parameter, value: str) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


database_url_option = click.option(
    "--database-url", metavar="URL",
    help="Database to act on: postgresql://user:password@host:5432/db or sqlite:///path.db "
         "(default: $SWITCHBOARD_DATABASE_URL, else sqlite:///switchboard.db in the current "
         "directory).")


def _resolve(url: str | None) -> str:
    return url if url is not None else Settings().database_url


def _fail(message: str, *, status: int = 1) -> NoReturn:
    click.echo(f"switchboard: {message}", err=True)
    sys.exit(status)


@click.group("db", context_settings={"help_option_names": ["-h", "--help"]})
def db() -> None:
    """Manage the call log's database: schema migrations and retention.

    Postgres needs `switchboard db upgrade` before the first `switchboard serve` (and after
    upgrading switchboard); the embedded SQLite file migrates itself at start-up."""


@db.command()
@database_url_option
def upgrade(database_url: str | None) -> None:
    """Create or upgrade the schema to the newest revision (safe to run again, and from
    several hosts at once)."""
    from app.db.engine import UnsupportedDatabaseUrl, mask_url
    from app.db.migrate import MigrationError, head_revisions
    from app.db.migrate import upgrade as run_upgrade

    url = _resolve(database_url)
    try:
        heads = asyncio.run(run_upgrade(url))
    except UnsupportedDatabaseUrl as exc:
        _fail(str(exc), status=2)
    except MigrationError as exc:
        _fail(str(exc))
    else:
        newest = "the newest" if heads == head_revisions() else "newer than this switchboard, " \
            "which runs on it: left as it is"
        click.echo(f"switchboard: the database at {mask_url(url)} is at schema revision "
                   f"{', '.join(heads)} ({newest})")


@db.command()
@database_url_option
def check(database_url: str | None) -> None:
    """Exit 0 if the schema is at the newest revision, or a newer one this switchboard runs on
    (its schema floor allows it; said so), 1 (saying what to do) if not."""
    from app.db.engine import UnsupportedDatabaseUrl, mask_url
    from app.db.migrate import MigrationError, check_current

    url = _resolve(database_url)
    try:
        newer = asyncio.run(check_current(url))
    except UnsupportedDatabaseUrl as exc:
        _fail(str(exc), status=2)
    except MigrationError as exc:
        _fail(str(exc))
    else:
        if newer is None:
            click.echo(f"switchboard: the database at {mask_url(url)} is up to date")
        else:
            click.echo(f"switchboard: the database at {mask_url(url)} is at schema revision "
                       f"{newer}, newer than this switchboard, which runs on it (its schema "
                       "floor allows it)")


@db.command()
@click.option("--older-than", "older_than", metavar="DURATION", required=True,
              callback=_duration_option,
              help="Age of the calls to remove: a number and a unit, s m h d or w "
                   "(e.g. 90d, 12h, 30m).")
@click.option("--hours-older-than", "hours_older_than", metavar="DURATION", default=None,
              callback=lambda ctx, param, value: _duration_option(ctx, param, value)
              if value is not None else None,
              help="Also remove the call hours (spend read-outs' sums) of the hours that ended "
                   "this long ago; at least --older-than. Default: keep them.")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@database_url_option
def prune(older_than: timedelta, hours_older_than: timedelta | None, dry_run: bool,
          database_url: str | None) -> None:
    """Remove call-log rows older than --older-than.

    On Postgres, drops each monthly partition of `calls` whose whole month is older (instant,
    whatever its size; rows of the month straddling the cut-off stay until that month is old
    enough). On SQLite, deletes the older rows. Their spend stays counted for budgets (the
    spend ledger, `spend_days`), and their totals for spend read-outs (the call hours,
    `call_hours`, a row per hour, key, team and model) unless --hours-older-than removes
    those."""
    from app.db.engine import UnsupportedDatabaseUrl, mask_url
    from app.db.migrate import MigrationError
    from app.db.migrate import prune as run_prune

    if hours_older_than is not None and hours_older_than < older_than:
        raise click.BadParameter("must be at least --older-than (spend read-outs would miss "
                                 "calls the log still holds)", param_hint="--hours-older-than")
    url = _resolve(database_url)
    try:
        removed = asyncio.run(run_prune(url, older_than=older_than, dry_run=dry_run,
                                        hours_older_than=hours_older_than))
    except UnsupportedDatabaseUrl as exc:
        _fail(str(exc), status=2)
    except MigrationError as exc:
        _fail(str(exc))
    else:
        verb = "would remove" if dry_run else "removed"
        what = ", ".join(removed) if removed else "nothing"
        click.echo(f"switchboard: {verb} {what} from the database at {mask_url(url)}")


if __name__ == "__main__":
    db()
