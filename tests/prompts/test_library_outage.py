"""``PromptLibrary`` while the database fails or hangs: a label it has read is served stale,
after at most one bounded wait for a lookup that hangs, and without a database attempt on
every call after one failed; the label is read again once the database answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import make_engine
from app.db.models import Base, PromptLabel
from app.prompts import PromptStore
from app.prompts.library import PromptLibrary
from tests.calllog.freeze_proxy import FreezeProxy
from tests.prompts.test_store import make, version

LABELS = PromptLabel.__tablename__


async def rename(engine: AsyncEngine, old: str, new: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(f"ALTER TABLE {old} RENAME TO {new}"))


async def test_after_a_failed_lookup_the_stale_label_is_served_without_asking(
        engine: AsyncEngine) -> None:
    """The database fails a label's lookup: the label last read is served, and for a TTL
    after the failure calls are served it without asking the database (which, back meanwhile
    with the label moved, would have said otherwise); then the move is read."""
    store = PromptStore(engine)
    await make(store, labels=["production"])
    await store.add_version("summarise", version("v2 {{ text }}"))
    now = [0.0]
    library = PromptLibrary(store, label_ttl_s=5.0, stale_wait_s=60.0, clock=lambda: now[0])
    assert await library.label("summarise", "production") == 1
    await rename(engine, LABELS, "prompt_labels_away")  # every label lookup now fails
    try:
        now[0] = 6.0
        assert await library.label("summarise", "production") == 1
    finally:
        await rename(engine, "prompt_labels_away", LABELS)
    await store.set_label("summarise", "production", 2)
    now[0] = 10.9  # within a TTL of the failure: not asked again
    assert await library.label("summarise", "production") == 1
    now[0] = 11.1
    assert await library.label("summarise", "production") == 2


@pytest.fixture
async def direct(pg_database: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the module's Postgres database, its tables empty."""
    engine = make_engine(pg_database)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.run_sync(Base.metadata.create_all)
    yield engine
    await engine.dispose()


async def test_a_hung_database_serves_the_stale_label_without_waiting_on_it(
        direct: AsyncEngine, pg_database: str, proxy: FreezeProxy) -> None:
    """Postgres hangs: the first call for an expired label waits at most the stale bound for
    the one lookup, and is served the label last read; while that lookup hangs, the calls
    after it are served at once, without a lookup of their own. Once the database answers,
    the lookup ends and the label's move is read."""
    store = PromptStore(direct)
    await make(store, labels=["production"])
    await store.add_version("summarise", version("v2 {{ text }}"))
    engine = make_engine(proxy.url(pg_database))
    now = [0.0]
    library = PromptLibrary(PromptStore(engine), label_ttl_s=5.0, stale_wait_s=0.05,
                            clock=lambda: now[0])
    try:
        assert await library.label("summarise", "production") == 1
        proxy.freeze()
        now[0] = 6.0
        assert await library.label("summarise", "production") == 1
        calls = [asyncio.ensure_future(library.label("summarise", "production"))
                 for _ in range(5)]
        for _ in range(5):
            await asyncio.sleep(0)  # a few turns of the loop, no time for the database
        assert [call.done() for call in calls] == [True] * 5
        assert {call.result() for call in calls} == {1}
        await store.set_label("summarise", "production", 2)
        proxy.thaw()
        for _ in range(400):  # the hung lookup completes once the bytes flow again
            if await library.label("summarise", "production") == 2:
                break
            await asyncio.sleep(0.05)
        assert await library.label("summarise", "production") == 2
    finally:
        proxy.thaw()
        await engine.dispose()


async def test_a_hung_database_fails_a_first_lookup_within_its_bound(
        direct: AsyncEngine, pg_database: str, proxy: FreezeProxy) -> None:
    """Postgres hangs before a label or a version was ever read here: the call fails within
    the lookup bound (``TimeoutError``, which the template stage answers 503), not after the
    engine's minute; the label's lookup goes on, and once the database answers it is read."""
    store = PromptStore(direct)
    await make(store, labels=["production"])
    engine = make_engine(proxy.url(pg_database))
    library = PromptLibrary(PromptStore(engine), lookup_wait_s=0.2)
    loop = asyncio.get_running_loop()
    try:
        await engine.dispose()  # no pooled connection: every lookup goes through the proxy
        proxy.freeze()
        for lookup in (library.label("summarise", "production"), library.version("summarise", 1)):
            began = loop.time()
            with pytest.raises(TimeoutError):
                await lookup
            assert loop.time() - began < 5  # not the engine's bounds (5 s, 60 s)
        proxy.thaw()
        for _ in range(400):
            try:
                assert await library.label("summarise", "production") == 1
                break
            except TimeoutError:
                await asyncio.sleep(0.05)
        assert (await library.version("summarise", 1)).number == 1
    finally:
        proxy.thaw()
        await engine.dispose()
