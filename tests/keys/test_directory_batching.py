"""``KeyDirectory`` batches the lookups of keys not cached: at most one lookup query runs at a
time, so a flood of never-issued keys costs a few queries, not one per key, and real keys asked
for in the same burst still resolve (on Postgres, and on SQLite, the embedded default)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import make_engine
from app.db.migrate import upgrade
from app.keys import KeyCreate, KeyDirectory, KeyStore, KeysUnavailable, TeamCreate
from app.keys.directory import LOOKUP_BATCH
from app.keys.model import KeyRecord, TeamRecord, hash_key
from tests.keys.test_admin_keys import client_of, keys_app
from tests.keys.test_directory import Database, admin_sql

RANDOM_KEYS = 500


def never_issued(count: int, *, tag: str = "r") -> list[str]:
    """``count`` distinct keys of the virtual keys' shape that no store holds."""
    return [f"sk-sb-never-issued-{tag}-{i:06d}-" + "x" * 24 for i in range(count)]


class CountingStore(KeyStore):
    """A real store that records the hashes each batched lookup asked for, and the most
    lookups it had running at once."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self.lookups: list[list[str]] = []
        self.running = 0
        self.most_running = 0
        self.asked = asyncio.Event()
        """Set once a lookup has begun."""

    async def find_many_by_hash(
            self, hashes: Iterable[str]) -> dict[str, tuple[KeyRecord, TeamRecord | None]]:
        wanted = list(hashes)
        self.lookups.append(wanted)
        self.asked.set()
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            return await super().find_many_by_hash(wanted)
        finally:
            self.running -= 1


@pytest.fixture
def store(empty_keys_engine: AsyncEngine) -> CountingStore:
    """A counting store on a migrated database with no keys or teams (SQLite or Postgres)."""
    return CountingStore(empty_keys_engine)


async def test_a_flood_of_unknown_keys_costs_a_few_queries(store: CountingStore) -> None:
    """500 concurrent resolves of distinct never-issued keys all answer None, in at most a
    handful of lookups, never two at once; each key is then remembered as unknown."""
    directory = KeyDirectory(store, None)
    keys = never_issued(RANDOM_KEYS)
    results = await asyncio.gather(*(directory.resolve(key) for key in keys))
    assert results == [None] * RANDOM_KEYS
    assert 1 <= len(store.lookups) <= 3, [len(batch) for batch in store.lookups]
    assert store.most_running == 1
    assert sorted(h for batch in store.lookups for h in batch) == sorted(map(hash_key, keys))
    assert directory.negative_size == RANDOM_KEYS
    store.lookups.clear()
    assert await directory.resolve(keys[0]) is None
    assert store.lookups == []


async def test_a_real_key_in_a_flood_resolves(store: CountingStore) -> None:
    """A real key (with its team) and a second real key resolved in the same burst as
    hundreds of random keys each resolve to their record; every concurrent resolve of one key
    gets the same entry, and the real keys are cached."""
    team = await store.create_team(TeamCreate(name="t", rpm=7))
    record, key = await store.create_key(KeyCreate(name="real", team_id=team.id))
    other_record, other = await store.create_key(KeyCreate(name="other"))
    directory = KeyDirectory(store, None)
    burst = never_issued(300, tag="a") + [key] * 3 + never_issued(300, tag="b") + [other]
    results = await asyncio.gather(*(directory.resolve(k) for k in burst))
    entries = results[300:303]
    assert entries[0] is not None and entries[0].key == record and entries[0].team == team
    assert all(entry is entries[0] for entry in entries)
    assert results[-1] is not None and results[-1].key == other_record
    assert results[:300] + results[303:-1] == [None] * 600
    assert directory.cached(hash_key(key)) is entries[0]
    assert store.most_running == 1
    assert len(store.lookups) <= 3, [len(batch) for batch in store.lookups]


async def test_keys_asked_for_during_a_query_go_into_the_next_one(
        store: CountingStore) -> None:
    """Keys asked for while a lookup runs wait and are looked up together in the next one,
    at most LOOKUP_BATCH per query."""
    directory = KeyDirectory(store, None)
    first = asyncio.ensure_future(directory.resolve("sk-sb-first-" + "f" * 40))
    await asyncio.wait_for(store.asked.wait(), 5)  # the first lookup's query has begun
    later = never_issued(LOOKUP_BATCH + 10)
    results = await asyncio.gather(first, *(directory.resolve(k) for k in later))
    assert results == [None] * (LOOKUP_BATCH + 11)
    assert [len(batch) for batch in store.lookups] == [1, LOOKUP_BATCH, 10]


async def test_a_cancelled_caller_does_not_cancel_the_batch(store: CountingStore) -> None:
    """Resolves cancelled while their keys wait in a batch do not cancel it: it still looks
    every key up (and caches what it found), and another caller of one of them gets its
    entry."""
    _, key = await store.create_key(KeyCreate(name="real"))
    directory = KeyDirectory(store, None)
    keys = [*never_issued(50), key]
    waiting = [asyncio.ensure_future(directory.resolve(k)) for k in keys]
    same = asyncio.ensure_future(directory.resolve(key))
    await asyncio.sleep(0)  # every resolve is queued
    for task in waiting:
        task.cancel()
    answered = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(a, asyncio.CancelledError) for a in answered)
    entry = await same
    assert entry is not None and entry.key.name == "real"
    assert directory.cached(hash_key(key)) is entry
    assert directory.negative_size == 50


@pytest.fixture
async def own_store() -> AsyncIterator[tuple[CountingStore, Database]]:
    """A counting store on a migrated Postgres database of the test's own, which it may drop
    (an outage)."""
    database = Database()
    await admin_sql(f'CREATE DATABASE "{database.name}"')
    await upgrade(database.url)
    engine = make_engine(database.url)
    yield CountingStore(engine), database
    await engine.dispose()
    await database.drop()


async def test_a_failed_batch_fails_its_keys_and_those_waiting(
        own_store: tuple[CountingStore, Database]) -> None:
    """A batch the database fails fails every key in it with KeysUnavailable, and the keys
    queued behind it at once, in one query; a cached key still resolves."""
    store, database = own_store
    _, cached = await store.create_key(KeyCreate(name="cached"))
    directory = KeyDirectory(store, None)
    entry = await directory.resolve(cached)
    await database.drop()
    store.lookups.clear()
    store.asked.clear()
    first = asyncio.ensure_future(directory.resolve("sk-sb-first-" + "f" * 40))
    await asyncio.wait_for(store.asked.wait(), 5)  # the first lookup's query has begun
    later = never_issued(200)
    results = await asyncio.gather(first, *(directory.resolve(k) for k in later),
                                   return_exceptions=True)
    assert all(isinstance(r, KeysUnavailable) for r in results), results[:3]
    assert [len(batch) for batch in store.lookups] == [1]
    assert await directory.resolve(cached) is entry


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_random_keys_get_401_while_a_real_key_gets_in(store: CountingStore) -> None:
    """Through the gateway's authentication: 1,000 concurrent requests with never-issued keys
    are 401 invalid_api_key in a few queries, and a real key not yet cached, sent in the same
    burst, is admitted (200)."""
    record, key = await store.create_key(KeyCreate(name="ops", admin=True))
    app = keys_app(KeyDirectory(store, None))
    async with client_of(app, key=None) as client:
        async def get(k: str) -> httpx.Response:
            return await client.get("/admin/keys", headers={"Authorization": f"Bearer {k}"})

        keys = never_issued(1000)
        answers = await asyncio.gather(*(get(k) for k in [*keys[:500], key, *keys[500:]]))
    real = answers.pop(500)
    assert real.status_code == 200, real.text
    assert [k["id"] for k in real.json()["data"]] == [record.id]
    assert {a.status_code for a in answers} == {401}
    assert {a.json()["error"]["code"] for a in answers} == {"invalid_api_key"}
    assert len(store.lookups) <= 4, [len(batch) for batch in store.lookups]
