"""Engines from every URL spelling users paste, with passwords kept out of messages."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app.db.cli import parse_duration
from app.db.engine import (
    POOL_SIZE,
    UnsupportedDatabaseUrl,
    is_sqlite,
    make_engine,
    mask_url,
    normalize_url,
)


@pytest.mark.parametrize("url", [
    "postgres://u:p@db.example:5432/calls",
    "postgresql://u:p@db.example:5432/calls",
    "postgresql+asyncpg://u:p@db.example:5432/calls",
])
def test_postgres_spellings_use_asyncpg(url: str) -> None:
    """Every Postgres spelling becomes a postgresql+asyncpg URL to the same place."""
    normalized = normalize_url(url)
    assert normalized.drivername == "postgresql+asyncpg"
    assert (normalized.host, normalized.port, normalized.database) == ("db.example", 5432, "calls")
    assert not is_sqlite(url)


@pytest.mark.parametrize("url", ["sqlite:///calls.db", "sqlite+aiosqlite:///calls.db"])
def test_sqlite_spellings_use_aiosqlite(url: str) -> None:
    """Both SQLite spellings become sqlite+aiosqlite and count as SQLite."""
    assert normalize_url(url).drivername == "sqlite+aiosqlite"
    assert is_sqlite(url)


def test_libpq_sslmode_becomes_asyncpg_ssl() -> None:
    """``?sslmode=require`` (libpq, hosting providers) is passed to asyncpg as ``ssl``."""
    normalized = normalize_url("postgres://u:p@h/db?sslmode=require")
    assert dict(normalized.query) == {"ssl": "require"}


def test_unsupported_url_is_refused_without_its_password() -> None:
    """A MySQL URL is refused with a message that names it but hides the password."""
    with pytest.raises(UnsupportedDatabaseUrl) as caught:
        normalize_url("mysql://admin:hunter2@db/calls")
    assert "mysql://admin:***@db/calls" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_mask_url_hides_password() -> None:
    """``mask_url`` keeps everything but the password."""
    assert mask_url("postgresql://u:hunter2@h:5432/db") == "postgresql://u:***@h:5432/db"


@pytest.mark.parametrize("url", [
    "postgresql+asyncpg://postgres:S3cret@PW@127.0.0.1:5432/db",
    "postgresql://u:a@b/c@d@h/db?sslpassword=x",
])
def test_mask_url_hides_a_password_holding_an_unescaped_at(url: str) -> None:
    """A password with an unescaped ``@`` is read by the URL parser as part of the host: none
    of it (nor the user name) is shown; what follows the last ``@`` is."""
    shown = mask_url(url)
    assert shown == mask_url(make_url(url))  # parsed first, as the gateway's own URL is
    assert "S3cret" not in shown and "PW" not in shown and "a@b" not in shown, shown
    assert shown.startswith(url.split("://")[0] + "://***@")
    assert "127.0.0.1:5432/db" in shown or "h/db" in shown
    assert "sslpassword=x" not in shown


def test_mask_url_keeps_a_sqlite_path_holding_an_at() -> None:
    """A file path's "@" is no password's: the path is shown as SQLAlchemy renders it."""
    url = "sqlite+aiosqlite:////data/team@x/calls.db"
    assert mask_url(url) == make_url(url).render_as_string() and "***" not in mask_url(url)


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://postgres@h:5432/db?password=SuperSecretPw123",
     "postgresql://postgres@h:5432/db?password=***"),
    ("postgresql://u:hunter2@h/db?sslmode=require&sslpassword=SuperSecretPw123",
     "postgresql://u:***@h/db?sslmode=require&sslpassword=***"),
    ("postgresql://u@h/db?Password=SuperSecretPw123&password=SuperSecretPw123&api_token=t&k=v",
     "postgresql://u@h/db?Password=***&api_token=***&k=v&password=***"),
])
def test_mask_url_hides_credentials_in_the_query(url: str, shown: str) -> None:
    """A query parameter that may carry a credential (asyncpg's ``?password=``, ``sslpassword``,
    any name holding pass, secret, token or key) is masked like the password; others are
    kept."""
    assert mask_url(url) == shown


async def test_postgres_engine_pool_is_bounded() -> None:
    """A Postgres engine's pool holds a small, fixed number of connections."""
    engine = make_engine("postgresql://u:p@127.0.0.1/db")
    try:
        assert engine.pool.size() == POOL_SIZE  # type: ignore[attr-defined]  # QueuePool
    finally:
        await engine.dispose()


async def test_sqlite_engine_uses_wal(tmp_path: Path) -> None:
    """SQLite connections run in WAL mode (readers never block the writer)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'wal.db'}")
    try:
        async with engine.connect() as connection:
            mode = (await connection.execute(text("PRAGMA journal_mode"))).scalar_one()
    finally:
        await engine.dispose()
    assert mode == "wal"


@pytest.mark.parametrize(("text_", "expected"), [
    ("90d", timedelta(days=90)), ("12h", timedelta(hours=12)), ("30m", timedelta(minutes=30)),
    ("45s", timedelta(seconds=45)), ("2w", timedelta(weeks=2)), (" 7d ", timedelta(days=7)),
])
def test_durations_parse(text_: str, expected: timedelta) -> None:
    """``--older-than`` takes a count and one unit."""
    assert parse_duration(text_) == expected


@pytest.mark.parametrize("text_", ["9000000d", "999999999d", "99999999999d", "5300w"])
def test_durations_past_a_century_are_refused(text_: str) -> None:
    """A duration no date reaches back to (``timedelta`` overflows, or the cutoff would) is a
    clean refusal, not an OverflowError traceback from ``db prune``."""
    with pytest.raises(ValueError, match="longer than 100 years"):
        parse_duration(text_)
    assert parse_duration("36500d") == timedelta(days=36500)


@pytest.mark.parametrize("text_", ["", "90", "d", "0d", "-1d", "1.5d", "3y", "1d2h"])
def test_bad_durations_are_refused(text_: str) -> None:
    """Anything but a positive count and one unit is refused, with an example."""
    with pytest.raises(ValueError, match="like 90d"):
        parse_duration(text_)
