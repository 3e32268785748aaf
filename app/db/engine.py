"""Async SQLAlchemy engines for the call log's database: Postgres (asyncpg) or SQLite (aiosqlite).

``make_engine`` accepts the URL spellings people paste from their hosting provider and turns them
into the async drivers:

    postgres://...  postgresql://...  postgresql+asyncpg://...   -> postgresql+asyncpg://
    sqlite:///path  sqlite+aiosqlite:///path                     -> sqlite+aiosqlite:///

libpq's ``?sslmode=...`` becomes asyncpg's ``?ssl=...``. Postgres gets a small, bounded pool (a
gateway host runs several workers; each must not take more than ``POOL_SIZE + MAX_OVERFLOW``
connections), pre-ping (a connection that died with a Postgres restart is replaced, not handed
out) and a short connect timeout (an unreachable database fails fast instead of hanging a batch).
SQLite runs in WAL mode so readers never block the writer. ``make_engine(url, atomic_ddl=True)``
(what migrations use) makes SQLite's DDL transactional too: Python's sqlite3 commits each
``CREATE TABLE`` by itself, so a migration killed or failing half-way would leave tables behind
that the next run trips over.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app import errors

POOL_SIZE = 5
MAX_OVERFLOW = 5
CONNECT_TIMEOUT_S = 5.0
"""Seconds to open one Postgres connection (TCP, TLS and authentication together)."""
POOL_TIMEOUT_S = 10.0
"""Seconds to wait for a free pooled connection before giving up."""
COMMAND_TIMEOUT_S = 60.0
"""Seconds one statement may run before asyncpg cancels it."""
SQLITE_BUSY_TIMEOUT_MS = 5000

_POSTGRES_DRIVERS = {"postgres", "postgresql", "postgresql+asyncpg"}
_SQLITE_DRIVERS = {"sqlite", "sqlite+aiosqlite"}


DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    SQLAlchemyError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError,
    OSError,  # refused, reset, unreachable; TimeoutError (connect timeout) is an OSError too
)
"""What talking to the database can raise: through SQLAlchemy, from the raw asyncpg connection
(COPY), or from the socket. Catch these, never bare ``Exception``."""


def describe_error(exc: BaseException) -> str:
    """A one-line reason for a ``DATABASE_ERRORS`` exception, for logs and error messages.

    SQLAlchemy's own text embeds the SQL and its parameters (row data); this gives the driver's
    message only. Driver messages name users and hosts, never passwords."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = " ".join(str(cause).split()) or "no details"
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(cause).__name__}: {text}"


def refused_value(exc: BaseException) -> errors.InvalidRequest | None:
    """The 400 for a ``DATABASE_ERRORS`` exception that is the request's fault, else ``None``.

    A SQLSTATE of class 22 (data exception) means the database refused a value it was sent: a
    NUL character in a text (Postgres stores none), a number past its column's range (asyncpg
    reports those as 22000 before sending them). Such a request is bad input, never "database
    unavailable"; every other error still is. The message is the driver's (``describe_error``),
    which quotes at most the client's own value."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    state = getattr(cause, "sqlstate", None)
    if not (isinstance(state, str) and state.startswith("22")):
        return None
    return errors.InvalidRequest(
        f"A value in the request is one the database cannot take ({describe_error(exc)}).",
        code="invalid_value")


@asynccontextmanager
async def answering(database: str, *, code: str = "database_unavailable",
                    log: logging.Logger | None = None) -> AsyncIterator[None]:
    """``DATABASE_ERRORS`` raised in the body become the client's answer: a value the database
    refused (``refused_value``) a 400; anything else a 503 ``code`` saying that ``database``
    (``"key database"``...) is unreachable, logged to ``log`` as a warning when given."""
    try:
        yield
    except DATABASE_ERRORS as exc:
        refused = refused_value(exc)
        if refused is not None:
            raise refused from None
        if log is not None:
            log.warning("request failed, %s unreachable: %s", database, describe_error(exc))
        raise errors.GatewayError(f"The {database} is unreachable; retry shortly.",
                                  status=503, code=code) from None


class UnsupportedDatabaseUrl(ValueError):
    """The URL is malformed, or names a database or driver Switchboard cannot use, or a SQLite
    file in a directory that does not exist; the message says which, never with the password."""


URL_FORMS = ("use postgresql://user:password@host:5432/db (an '@', ':' or '/' in the password "
             "written %40, %3A or %2F) or sqlite:///path/to/file.db")


def normalize_url(url: str | URL) -> URL:
    """``url`` rewritten for the async drivers (see the module docstring).

    Raises ``UnsupportedDatabaseUrl`` for anything but Postgres or SQLite, for a URL that does
    not parse or has a port outside 1-65535, and for a SQLite file whose directory does not
    exist; the message never contains the password."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise UnsupportedDatabaseUrl(f"not a database URL: {mask_url(url)}") from exc
    except ValueError:
        # SQLAlchemy's message quotes what it took for the port, which can be the tail of a
        # password holding an unescaped '@' or ':'; so does its traceback (hence `from None`).
        raise UnsupportedDatabaseUrl(
            "unreadable database URL (a port that is not a number, an IPv6 address without "
            f"its closing ']', or an '@' or ':' in the password?): {URL_FORMS}") from None
    driver = parsed.drivername
    if driver in _POSTGRES_DRIVERS:
        if parsed.port is not None and not 0 < parsed.port <= 65535:
            raise UnsupportedDatabaseUrl(
                f"the port of the database URL {mask_url(parsed)} is not between 1 and 65535")
        parsed = parsed.set(drivername="postgresql+asyncpg")
        if "sslmode" in parsed.query:
            query = dict(parsed.query)
            query["ssl"] = query.pop("sslmode")
            parsed = parsed.set(query=query)
        return parsed
    if driver in _SQLITE_DRIVERS:
        _check_sqlite_directory(sqlite_file(parsed))
        return parsed.set(drivername="sqlite+aiosqlite")
    raise UnsupportedDatabaseUrl(f"unsupported database URL {mask_url(parsed)}: {URL_FORMS}")


def sqlite_file(url: URL) -> str | None:
    """The file of a SQLite ``url`` (``None``: in memory), a URI filename's path included
    (``sqlite:///file:calls.db?uri=true``)."""
    database = url.database
    if database and database.startswith("file:") and url.query.get("uri"):
        database = None if url.query.get("mode") == "memory" else urlsplit(database).path
    return None if not database or database == ":memory:" else database


def _check_sqlite_directory(database: str | None) -> None:
    """SQLite creates a missing file, never a missing directory: say so before it fails."""
    if database is None:
        return
    directory = Path(database).parent
    if not directory.is_dir():
        raise UnsupportedDatabaseUrl(
            f"the SQLite database {database} is in a directory that does not exist "
            f"({directory}): create it or name another path")


def is_sqlite(url: str | URL) -> bool:
    """Whether ``url`` names a SQLite database (the embedded mode)."""
    try:
        return make_url(url).get_backend_name() == "sqlite"
    except (ArgumentError, ValueError):
        return False


_SECRET_PARAM = re.compile(r"pass|secret|token|key", re.IGNORECASE)
"""A query parameter that may carry a credential: asyncpg takes ``?password=`` (and
``sslpassword``) as well as the ``user:password@`` form."""


def mask_url(url: str | URL) -> str:
    """``url`` with its password, and the value of every query parameter whose name says it
    may hold a credential (``_SECRET_PARAM``: ``?password=``...), replaced by ``***``: safe for
    logs and error messages. A password holding an unescaped ``@`` (the URL then has two)
    would be read as part of the host and shown: everything before the last ``@`` of the
    authority is masked then, the user name too."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return "<unparseable database URL>"
    # a password's rest read as the host's start (or the database's, when it held a "/"):
    # keep only what follows the last "@"
    if "@" in (parsed.host or ""):
        # (URL is a named tuple: _replace clears the password, which URL.set leaves as is)
        parsed = parsed._replace(username="***", password=None,
                                 host=(parsed.host or "").rsplit("@", 1)[1])
    elif "@" in (parsed.database or "") and parsed.get_backend_name() != "sqlite":
        host, _, database = (parsed.database or "").rsplit("@", 1)[1].partition("/")
        parsed = parsed._replace(username="***", password=None, host=host, port=None,
                                 database=database or None)
    hidden = {name: "***" for name in parsed.query if _SECRET_PARAM.search(name)}
    shown = parsed.update_query_dict(hidden).render_as_string(hide_password=True) if hidden \
        else parsed.render_as_string(hide_password=True)
    # the masks as the password's reads, unescaped
    return shown.replace("=%2A%2A%2A", "=***").replace("://%2A%2A%2A@", "://***@", 1)


def make_engine(url: str | URL, *, echo: bool = False, atomic_ddl: bool = False) -> AsyncEngine:
    """An ``AsyncEngine`` for ``url`` (any spelling accepted by ``normalize_url``).

    With ``atomic_ddl`` every transaction on SQLite, schema changes included, commits or rolls
    back as a whole, and takes the write lock when it begins (Postgres always works so). Nothing
    connects until first use. The caller owns the engine and must ``await engine.dispose()``
    when done."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, echo=echo, atomic_ddl=atomic_ddl)
    connect_args: dict[str, Any] = {
        "timeout": CONNECT_TIMEOUT_S,
        "command_timeout": COMMAND_TIMEOUT_S,
        "server_settings": {"application_name": "switchboard"},
    }
    return create_async_engine(
        parsed, echo=echo, pool_size=POOL_SIZE, max_overflow=MAX_OVERFLOW,
        pool_timeout=POOL_TIMEOUT_S, pool_pre_ping=True, pool_recycle=1800,
        connect_args=connect_args)


def _sqlite_engine(url: URL, *, echo: bool, atomic_ddl: bool) -> AsyncEngine:
    engine = create_async_engine(url, echo=echo)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        if atomic_ddl:
            # sqlite3 then emits no BEGIN (nor the COMMIT around DDL) of its own: ours below.
            dbapi_connection.isolation_level = None
        # WAL: readers (admin queries, `logs query`) never block the writer, and commits are
        # cheap. synchronous=NORMAL is durable across process crashes in WAL mode (only an OS
        # crash can lose the last commits, and the spool still holds those rows).
        # The busy timeout first: switching a new file to WAL waits for other connections too.
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    if atomic_ddl:
        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(connection: Any) -> None:
            # IMMEDIATE: the write lock now, not at the first write, which in WAL mode fails at
            # once (no busy wait) if another connection wrote since this one's first read.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
