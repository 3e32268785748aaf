"""Shared fixtures: the upstream simulator on loopback, an outbound aiohttp session."""

from __future__ import annotations

import asyncio
import compileall
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import make_engine
from app.db.models import Base
from app.providers.http import new_session
from app.simulator import SimOptions, create_app
from tests.calllog.freeze_proxy import FreezeProxy
from tests.servers import serve


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile ``app`` to bytecode once, before the tests start their gateway processes
    (``switchboard serve``, hundreds of them): where the environment sets
    ``PYTHONDONTWRITEBYTECODE`` (the development machines' does), each start otherwise
    compiled all of ``app`` again, ~0.5 s of its ~2 s import."""
    compileall.compile_dir(Path(__file__).resolve().parent.parent / "app", quiet=1)


@pytest.fixture(scope="session")
def simulator() -> Iterator[str]:
    """A simulator speaking current vLLM/OpenAI/Anthropic dialects, with no added latency."""
    with serve(create_app(SimOptions())) as url:
        yield url


@pytest.fixture
def black_hole() -> Iterator[str]:
    """The base URL of a server that takes connections and never answers (a hung upstream):
    a listening socket nobody accepts from, so the kernel completes every handshake."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        sock.close()


@pytest.fixture(scope="session")
def old_vllm_simulator() -> Iterator[str]:
    """A simulator playing vLLM 0.10.0: flat error bodies, ``guided_*`` structured output."""
    with serve(create_app(SimOptions(vllm_version="0.10.0"))) as url:
        yield url


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """The gateway's own outbound session, as providers use it."""
    async with new_session() as s:
        yield s


PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


async def _admin_sql(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """A throwaway database on the shared Postgres for one test module, dropped afterwards."""
    name = f"switchboard_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin_sql(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        asyncio.run(_admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLite file, or the module's Postgres database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'calls.db'}"
    return str(request.getfixturevalue("pg_database"))


@pytest.fixture
def proxy() -> Iterator[FreezeProxy]:
    """A proxy to the shared Postgres the test may freeze (a database that never answers)."""
    frozen = FreezeProxy(5432)
    yield frozen
    frozen.close()


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The test's own engine on an empty ``calls`` table (SQLite or Postgres)."""
    eng = make_engine(database_url)
    async with eng.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.run_sync(Base.metadata.create_all)
    yield eng
    await eng.dispose()
