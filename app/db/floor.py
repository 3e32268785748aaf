"""The schema floor: which older switchboards can run on a database a newer one migrated.

Every migration declares ``compatible_from``: the oldest revision whose code still runs on the
schema the migration leaves. An additive migration (new nullable columns, tables, indexes,
triggers) keeps its predecessor's floor; one that breaks older code (0018 changed a primary key)
names itself. After each migration step, ``record_floor`` (Alembic's ``on_version_apply``, so
``alembic`` run by hand does it too, and ``--sql`` prints it) writes the floor of the revision
the database is now at into ``schema_floor`` (migration 0020; databases at older revisions have
no floor, and every switchboard before 0020 ignores it).

``app.db.migrate`` reads it when the database is at a revision this code does not know: the
code serves when the floor is a revision it knows (at or below its own head: the history is
linear), and refuses otherwise.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping
from types import ModuleType
from typing import Any

from alembic.runtime.migration import MigrationContext, MigrationInfo
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Table, delete, insert, inspect, select

from app.db.models import SchemaFloor

FIRST = "0020"
"""The revision that creates ``schema_floor``: the floor is written from it on."""


@functools.cache
def _scripts() -> ScriptDirectory:
    from app.db.migrate import alembic_config

    return ScriptDirectory.from_config(alembic_config())


@functools.cache
def compatible_from(revision: str) -> str:
    """The floor that ``revision``'s migration declares (``KeyError`` for an unknown one)."""
    script = _scripts().get_revision(revision)
    if script is None:
        raise KeyError(revision)
    module: ModuleType = script.module
    return str(module.compatible_from)


@functools.cache
def _has_floor(revision: str) -> bool:
    """Whether a database at ``revision`` has ``schema_floor`` (it is ``FIRST`` or later)."""
    return any(script.revision == FIRST
               for script in _scripts().iterate_revisions(revision, "base"))


def record_floor(ctx: MigrationContext, step: MigrationInfo, heads: Collection[Any],
                 run_args: Mapping[str, Any]) -> None:
    """Alembic's ``on_version_apply``: write the floor of the revision the database is at after
    ``step`` (nothing before ``FIRST``). Runs in the migration's transaction."""
    if len(heads) != 1:
        return  # at base (no schema), or branches: the history is linear, no floor to write
    (revision,) = (str(head) for head in heads)
    if not _has_floor(revision):
        return
    table = SchemaFloor.__table__
    assert isinstance(table, Table)
    ctx.execute(delete(table))
    ctx.execute(insert(table).values(revision=compatible_from(revision)))


def read_floor(connection: Connection) -> str | None:
    """The database's floor, or ``None`` if it has none (no ``schema_floor``, or no row)."""
    if not inspect(connection).has_table(SchemaFloor.__tablename__):
        return None
    return connection.execute(select(SchemaFloor.revision)).scalar_one_or_none()
