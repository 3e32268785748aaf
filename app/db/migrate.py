"""Schema management for the call log: upgrade, check, monthly partitions, retention.

- ``upgrade(url)``: Alembic upgrade to head (``switchboard db upgrade``; the embedded SQLite
  mode calls it at start-up, and it returns in milliseconds when already at head). Concurrent
  callers (several workers starting at once) are serialised: an advisory lock on Postgres, a lock
  file next to the SQLite database.
- ``check_current(url)``: raise ``SchemaNotReady`` unless the database is at head (a server
  started against an unmigrated Postgres refuses to start, saying what to run), and
  ``DatabaseUnreachable`` when it cannot tell (a server started then spools call records and
  checks again until it can). A database a newer switchboard migrated passes when its schema
  floor (``app.db.floor``) is at or below this code's head: older code runs on it (a rollback).
- ``ensure_partitions(engine, months)``: create missing monthly partitions of ``calls``.
- ``prune(url, older_than=...)``: drop partitions entirely older than the cut-off (Postgres) or
  delete older rows (SQLite).

Errors: ``SchemaNotReady``, ``DatabaseUnreachable`` and ``UpgradeFailed``, all
``MigrationError``; messages carry the URL with its password masked. A malformed URL raises
``app.db.engine.UnsupportedDatabaseUrl`` before anything connects.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import ColumnElement, Connection, Table, delete, func, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.db.engine import (
    DATABASE_ERRORS,
    describe_error,
    is_sqlite,
    make_engine,
    mask_url,
    normalize_url,
    sqlite_file,
)
from app.db.floor import read_floor
from app.db.models import Base
from app.db.partitions import (
    PARENT,
    create_partition_sql,
    month_from_name,
    next_month,
    partition_name,
)

log = logging.getLogger("switchboard.db")

MIGRATIONS = Path(__file__).with_name("migrations")
_LOCK_KEY = 0x5357_4244  # "SWBD": one advisory-lock key for all schema changes of Switchboard


class MigrationError(Exception):
    """The schema could not be checked or changed; the message says why and what to do."""


class SchemaNotReady(MigrationError):
    """The database has no Switchboard schema, or an older or newer one than this code."""


class DatabaseUnreachable(MigrationError):
    """The database could not be reached or refused the operation."""


class UpgradeFailed(MigrationError):
    """A migration step failed; the run was rolled back, the schema is as it was before."""


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic ``Config`` for the packaged migrations (no ini file needed).

    ``url``, when given, is the database to migrate (else the runner falls back to
    ``Settings().database_url``)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    if url is not None:
        config.attributes["url"] = normalize_url(url)
    return config


@functools.cache
def head_revisions() -> tuple[str, ...]:
    """The revision(s) a current database is at."""
    return tuple(sorted(ScriptDirectory.from_config(alembic_config()).get_heads()))


def _current_revisions(connection: Connection) -> tuple[str, ...]:
    return tuple(sorted(MigrationContext.configure(connection).get_current_heads()))


def _schema_state(connection: Connection) -> tuple[tuple[str, ...], str | None]:
    """The revision(s) the database is at, and its schema floor when they are newer than this
    code (``None`` otherwise, or when it has none)."""
    current = _current_revisions(connection)
    newer = bool(current) and not set(current) <= _known_revisions()
    return current, read_floor(connection) if newer else None


@asynccontextmanager
async def _connect(url: str | URL, action: str, *,
                   atomic_ddl: bool = False) -> AsyncIterator[AsyncConnection]:
    """An open connection to ``url`` (see ``make_engine`` for ``atomic_ddl``); driver errors
    become ``DatabaseUnreachable``."""
    engine = make_engine(url, atomic_ddl=atomic_ddl)
    try:
        async with engine.connect() as connection:
            yield connection
    except DATABASE_ERRORS as exc:
        raise DatabaseUnreachable(
            f"could not {action} the database at {mask_url(url)}: {describe_error(exc)}") from exc
    finally:
        await engine.dispose()


async def upgrade(url: str | URL) -> tuple[str, ...]:
    """Bring the database at ``url`` to the newest schema; return the revision(s) it is now at.

    Idempotent and cheap when already at head. All steps run in one transaction, on SQLite
    too: a run that fails or is killed leaves the schema as it was. Raises
    ``DatabaseUnreachable``, ``UpgradeFailed``, and ``SchemaNotReady`` for a database a newer
    switchboard migrated beyond what this code runs on; one it runs on (its schema floor is at
    or below this code's head) is left as it is, and its revision(s) returned."""
    normalize_url(url)  # a malformed URL fails here, before the SQLite lock file opens
    heads = head_revisions()
    async with _sqlite_file_lock(url), _connect(url, "upgrade", atomic_ddl=True) as connection:
        current, floor = await connection.run_sync(_schema_state)
        if current == heads or _runs_on_newer(url, current, floor):
            return current
        await _lock_schema(connection)
        try:
            await connection.run_sync(_run_upgrade, alembic_config(url))
            await connection.commit()
        except DATABASE_ERRORS as exc:
            raise UpgradeFailed(
                f"could not upgrade the database at {mask_url(url)}, which is left as it was: "
                f"{describe_error(exc)}") from exc
    return heads


def _runs_on_newer(url: str | URL, current: tuple[str, ...], floor: str | None) -> bool:
    """Whether ``current`` names a revision this code does not know (a newer switchboard
    migrated the database) whose schema floor ``floor`` this code is at or above (``True``,
    logged: it runs on it); ``False`` for known revisions. Raises ``SchemaNotReady`` for a newer
    one whose floor is above this code, or that has none (migrated before floors existed)."""
    if not current or set(current) <= _known_revisions():
        return False
    revision = ", ".join(current)
    newer = (f"the database at {mask_url(url)} has schema revision {revision}, newer than this "
             "version of switchboard knows")
    if floor is None:
        raise SchemaNotReady(f"{newer}: upgrade switchboard")
    if floor not in _known_revisions():
        raise SchemaNotReady(
            f"{newer}, and it needs switchboard at schema revision {floor} or newer (this one "
            f"is at {', '.join(head_revisions())}): upgrade switchboard")
    log.warning("%s; it runs on that schema (it is compatible from revision %s, this one is at "
                "%s)", newer, floor, ", ".join(head_revisions()))
    return True


def _run_upgrade(connection: Connection, config: Config) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def _lock_schema(connection: AsyncConnection) -> None:
    """On Postgres, wait for any other migrating process (the lock ends with the transaction)."""
    if connection.dialect.name == "postgresql":
        await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})


@asynccontextmanager
async def _sqlite_file_lock(url: str | URL) -> AsyncIterator[None]:
    """On a SQLite file, hold ``<file>.migrate.lock`` exclusively (other workers wait).

    Taken before the first connection opens: opening one switches a new file to WAL, which
    needs the database to itself, and a migration holds it for a while."""
    if not is_sqlite(url):
        yield
        return
    database = sqlite_file(make_url(url))
    if database is None:
        yield
        return
    # In a thread: another coroutine of this very process may be the holder we wait for.
    lock = await asyncio.to_thread(open, f"{database}.migrate.lock", "a")
    try:
        await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
        yield
    finally:
        lock.close()  # releases the lock


async def check_current(url: str | URL, *, timeout_s: float | None = None) -> str | None:
    """Return if the database at ``url`` is at the newest schema (``None``), or at a newer one
    whose schema floor this code is at or above (a rollback after an additive migration;
    logged; its revision is returned).

    Raises ``SchemaNotReady`` (no schema, an old one, or a newer one whose floor is above this
    code or that has none) or ``DatabaseUnreachable`` (also when it does not answer within
    ``timeout_s``: a hung server accepts connections and never replies). A SQLite file that
    does not exist is ``SchemaNotReady`` too, and is not created."""
    normalize_url(url)  # a malformed URL, or a SQLite file's missing directory, first
    if is_sqlite(url) and (database := sqlite_file(make_url(url))) is not None \
            and not await asyncio.to_thread(Path(database).exists):
        raise SchemaNotReady(f"there is no database at {mask_url(url)} (nothing was created): "
                             "`switchboard db upgrade` or `switchboard serve` creates it")
    try:
        async with asyncio.timeout(timeout_s):
            async with _connect(url, "check") as connection:
                current, floor = await connection.run_sync(_schema_state)
    except TimeoutError:
        raise DatabaseUnreachable(f"could not check the database at {mask_url(url)}: no "
                                  f"answer within {timeout_s:.0f}s") from None
    if current == head_revisions():
        return None
    if _runs_on_newer(url, current, floor):
        return ", ".join(sorted(current))
    raise SchemaNotReady(
        f"the database at {mask_url(url)} has no switchboard schema (or an old one): run "
        "`switchboard db upgrade`")


def _known_revisions() -> set[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return {rev.revision for rev in script.walk_revisions()}


async def ensure_partitions(engine: AsyncEngine, months: Iterable[date]) -> list[str]:
    """Make sure ``calls`` has a partition for each month in ``months`` (any day of the month);
    return the names of those partitions. A no-op returning ``[]`` on SQLite.

    Creates only the missing ones, in one transaction under the schema advisory lock (so
    concurrent writers do not race), waiting at most 2 s for the lock on ``calls``. Raises
    ``DATABASE_ERRORS`` (e.g. ``calls`` missing, or that lock not granted in time)."""
    if engine.dialect.name != "postgresql":
        return []
    wanted = {date(m.year, m.month, 1) for m in months}
    async with engine.connect() as connection:
        existing = await _partition_months(connection)
        missing = sorted(wanted - existing)
        if missing:
            await _lock_schema(connection)
            # Creating a partition locks ``calls`` exclusively for a moment; behind a long
            # query that could take long, and every writer would queue behind us: give up.
            await connection.execute(text("SET LOCAL lock_timeout = '2s'"))
            for month in missing:
                await connection.execute(text(create_partition_sql(month)))
        await connection.commit()
    return [partition_name(month) for month in sorted(wanted)]


async def _partition_months(connection: AsyncConnection) -> set[date]:
    names = await _partition_names(connection)
    return {month for name in names if (month := month_from_name(name)) is not None}


async def _partition_names(connection: AsyncConnection) -> list[str]:
    result = await connection.execute(text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass(:parent)"), {"parent": PARENT})
    return [str(name) for name in result.scalars()]


async def prune(url: str | URL, *, older_than: timedelta, now: datetime | None = None,
                dry_run: bool = False, hours_older_than: timedelta | None = None) -> list[str]:
    """Remove call rows older than ``older_than`` before ``now`` (default: the current time),
    and with ``hours_older_than`` the call hours (``call_hours``) of the hours that ended that
    long before ``now``; return what was removed (with ``dry_run``: what would be, removing
    nothing).

    Postgres: drops each monthly partition whose whole month ends at or before the cut-off and
    returns their names (rows in the partition straddling the cut-off stay until it expires as a
    whole). SQLite: deletes the older rows and returns ``["calls (N rows)"]`` (``[]`` if none).
    Their spend stays in the spend ledger (``app.db.ledger``), which budgets read, and their
    totals in the call hours, which spend read-outs read, unless ``hours_older_than`` removes
    those too (``ValueError`` if it is shorter than ``older_than``: spend read-outs would miss
    calls the log still holds). Raises ``DatabaseUnreachable``, and ``SchemaNotReady`` if the
    schema is not current."""
    if hours_older_than is not None and hours_older_than < older_than:
        raise ValueError("the call hours must be kept at least as long as the calls")
    await check_current(url)
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    cutoff = moment - older_than
    async with _connect(url, "prune") as connection:
        if connection.dialect.name != "postgresql":
            removed = await _delete_rows(connection, cutoff=cutoff, dry_run=dry_run)
        else:
            removed = [name for name in sorted(await _partition_names(connection))
                       if (month := month_from_name(name)) is not None
                       and _month_end(month) <= cutoff]
            for name in [] if dry_run else removed:
                # Dropping a partition briefly locks the parent: give up rather than stall
                # writers.
                await connection.execute(text("SET LOCAL lock_timeout = '10s'"))
                await connection.execute(text(f'DROP TABLE IF EXISTS "{name}"'))
                await connection.commit()
            await connection.commit()
        if hours_older_than is not None:
            removed += await _delete_hours(connection, cutoff=moment - hours_older_than,
                                           dry_run=dry_run)
    return removed


async def _delete_rows(connection: AsyncConnection, *, cutoff: datetime,
                       dry_run: bool) -> list[str]:
    calls = Base.metadata.tables["calls"]
    # stored as naive UTC on SQLite
    return await _delete_where(connection, calls, calls.c.created_at < cutoff.replace(tzinfo=None),
                               dry_run=dry_run)


async def _delete_hours(connection: AsyncConnection, *, cutoff: datetime,
                        dry_run: bool) -> list[str]:
    """Remove (or count) the call hours that ended at or before ``cutoff``."""
    hours = Base.metadata.tables["call_hours"]
    return await _delete_where(
        connection, hours, hours.c.hour <= (cutoff - timedelta(hours=1)).replace(tzinfo=None),
        dry_run=dry_run)


async def _delete_where(connection: AsyncConnection, table: Table,
                        condition: ColumnElement[bool], *, dry_run: bool) -> list[str]:
    """Delete (with ``dry_run``: count) ``table``'s rows that meet ``condition``; ``["TABLE (N
    rows)"]``, or ``[]`` for none."""
    if dry_run:
        count = (await connection.execute(
            select(func.count()).select_from(table).where(condition))).scalar_one()
    else:
        count = (await connection.execute(delete(table).where(condition))).rowcount
        await connection.commit()
    return [f"{table.name} ({count} rows)"] if count else []


def _month_end(month: date) -> datetime:
    """The first instant (UTC) of the month after ``month``: where its partition ends."""
    end = next_month(month)
    return datetime(end.year, end.month, end.day, tzinfo=UTC)
