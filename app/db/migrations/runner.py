"""What Alembic's ``env.py`` runs: migrations against the database the caller chose.

Where the database URL comes from, first match wins (never from an ini file):

1. ``config.attributes["connection"]``: an open sync-facing connection handed over by
   ``app.db.migrate.upgrade`` (which runs us inside ``AsyncConnection.run_sync``);
2. ``config.attributes["url"]``: a URL set programmatically;
3. ``alembic -x database_url=...`` on the command line;
4. ``Settings().database_url`` (``SWITCHBOARD_DATABASE_URL``, else the embedded SQLite file).
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.engine import URL

from app.db.engine import make_engine, normalize_url
from app.db.floor import record_floor
from app.db.models import Base
from app.db.partitions import month_from_name
from app.settings import Settings


def run_migrations() -> None:
    """Run the migrations Alembic asked for (online or ``--sql`` offline)."""
    config = context.config
    if config.config_file_name is not None and config.attributes.get("configure_logger", True):
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        _run_on(connection)
    elif context.is_offline_mode():
        _run_offline(database_url())
    else:
        asyncio.run(_run_online(database_url()))


def database_url() -> URL:
    """The URL to migrate (see the module docstring), normalised for the async drivers."""
    config = context.config
    url = config.attributes.get("url")
    if url is None:
        url = context.get_x_argument(as_dictionary=True).get("database_url")
    if url is None:
        url = Settings().database_url
    return normalize_url(url)


def _include_name(name: str | None, type_: str, _parent: object) -> bool:
    """Autogenerate sees the parent ``calls`` table, not its monthly partitions."""
    return not (type_ == "table" and name is not None and month_from_name(name) is not None)


def _run_on(connection: Connection) -> None:
    # transactional_ddl: our engines make SQLite's DDL transactional (make_engine's atomic_ddl),
    # so one run is one transaction there too, as on Postgres.
    context.configure(connection=connection, target_metadata=Base.metadata,
                      include_name=_include_name, compare_type=True, transactional_ddl=True,
                      render_as_batch=connection.dialect.name == "sqlite",
                      on_version_apply=record_floor)
    with context.begin_transaction():
        context.run_migrations()


def _run_offline(url: URL) -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True,
                      dialect_opts={"paramstyle": "named"}, on_version_apply=record_floor)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online(url: URL) -> None:
    engine = make_engine(url, atomic_ddl=True)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_on)
            await connection.commit()
    finally:
        await engine.dispose()
