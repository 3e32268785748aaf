"""``KeyDirectory``: cache hits without the database, outages, negative caching, refresh, the
stale write-back guard, and invalidation over Redis pub/sub between directories."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Collection

import asyncpg
import pytest
import redis.asyncio as aioredis
from sqlalchemy import event, update

from app.db.engine import make_engine
from app.db.migrate import upgrade
from app.db.models import ApiKey, Team
from app.keys import (
    CHANNEL,
    KeyCreate,
    KeyDirectory,
    KeyStore,
    KeysUnavailable,
    KeyUpdate,
    TeamCreate,
)
from app.keys import directory as directory_module
from app.keys.model import hash_key
from tests.calllog.servers import PrivateRedis

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


async def admin_sql(sql: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


class Database:
    """A migrated Postgres database of its own, which a test may drop (an outage)."""

    def __init__(self) -> None:
        self.name = f"switchboard_test_keys_{uuid.uuid4().hex[:12]}"
        self.url = f"postgresql://postgres@127.0.0.1:5432/{self.name}"

    async def drop(self) -> None:
        await admin_sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


@pytest.fixture
async def database() -> AsyncIterator[Database]:
    db = Database()
    await admin_sql(f'CREATE DATABASE "{db.name}"')
    await upgrade(db.url)
    yield db
    await db.drop()


@pytest.fixture
async def store(database: Database) -> AsyncIterator[KeyStore]:
    engine = make_engine(database.url)
    yield KeyStore(engine)
    await engine.dispose()


@pytest.fixture
async def shared_redis() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(host="127.0.0.1", port=6379)
    yield client
    await client.aclose()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def eventually(check: Callable[[], bool], *, within: float = 1.0) -> bool:
    """Whether ``check()`` holds at some point in the next ``within`` seconds."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def test_resolved_key_is_cached(store: KeyStore) -> None:
    """After one resolve the entry is a synchronous cache hit, the same object each time."""
    record, key = await store.create_key(KeyCreate(name="k"))
    directory = KeyDirectory(store, None)
    assert directory.cached(hash_key(key)) is None
    entry = await directory.resolve(key)
    assert entry is not None and entry.key == record and entry.team is None
    assert directory.cached(hash_key(key)) is entry
    assert await directory.resolve(key) is entry


async def test_database_down_serves_cached_and_refuses_unknown(
        store: KeyStore, database: Database) -> None:
    """With the database gone a cached key still resolves; an uncached one raises
    KeysUnavailable (a 503 for the caller, never a 401); a refresh keeps the entries."""
    _, known = await store.create_key(KeyCreate(name="known"))
    _, other = await store.create_key(KeyCreate(name="other"))
    directory = KeyDirectory(store, None)
    entry = await directory.resolve(known)
    await database.drop()
    assert await directory.resolve(known) is entry
    with pytest.raises(KeysUnavailable):
        await directory.resolve(other)
    await directory.refresh()
    assert directory.cached(hash_key(known)) is entry


async def test_unknown_keys_are_remembered_briefly_and_boundedly(
        store: KeyStore, database: Database) -> None:
    """An unknown key is answered from the negative cache until its TTL passes (no query),
    and the negative cache never holds more than its bound."""
    clock = Clock()
    directory = KeyDirectory(store, None, max_negative=3, negative_ttl_s=2.0, clock=clock)
    for i in range(5):
        assert await directory.resolve(f"sk-sb-random-{i}") is None
    assert directory.negative_size == 3
    await database.drop()
    assert await directory.resolve("sk-sb-random-4") is None  # remembered: no query
    clock.now += 2.5
    with pytest.raises(KeysUnavailable):
        await directory.resolve("sk-sb-random-4")


async def test_positive_cache_is_bounded(store: KeyStore) -> None:
    """Past max_entries the oldest cached key is dropped."""
    directory = KeyDirectory(store, None, max_entries=2)
    keys = [(await store.create_key(KeyCreate(name=f"k{i}")))[1] for i in range(3)]
    for key in keys:
        await directory.resolve(key)
    assert len(directory) == 2
    assert directory.cached(hash_key(keys[0])) is None
    assert directory.cached(hash_key(keys[2])) is not None


async def test_changed_drops_a_key_or_a_team(store: KeyStore) -> None:
    """changed(key_id) drops that key; changed(team_id) drops the team's keys only."""
    team = await store.create_team(TeamCreate(name="t"))
    _, a = await store.create_key(KeyCreate(name="a", team_id=team.id))
    b_record, b = await store.create_key(KeyCreate(name="b", team_id=team.id))
    _, c = await store.create_key(KeyCreate(name="c"))
    directory = KeyDirectory(store, None)
    for key in (a, b, c):
        await directory.resolve(key)
    await directory.changed(key_id=b_record.id)
    assert [directory.cached(hash_key(k)) is None for k in (a, b, c)] == [False, True, False]
    await directory.changed(team_id=team.id)
    assert [directory.cached(hash_key(k)) is None for k in (a, b, c)] == [True, True, False]


async def test_a_key_that_moved_team_is_dropped_with_its_new_team(store: KeyStore) -> None:
    """A cached key moved to another team behind the directory's back is found by its new
    team at the next refresh (and no longer by its old one); entries the bound evicts leave
    nothing behind (the directory indexes entries by key and team id: private state read)."""
    old, new = [await store.create_team(TeamCreate(name=n)) for n in ("old", "new")]
    record, key = await store.create_key(KeyCreate(name="k", team_id=old.id))
    directory = KeyDirectory(store, None, max_entries=3)
    await directory.resolve(key)
    async with store.engine.begin() as conn:
        await conn.execute(update(ApiKey).where(ApiKey.id == record.id).values(team_id=new.id))
    await directory.refresh()
    entry = directory.cached(hash_key(key))
    assert entry is not None and entry.key.team_id == new.id
    directory.drop(team_id=old.id)
    assert directory.cached(hash_key(key)) is entry
    directory.drop(team_id=new.id)
    assert directory.cached(hash_key(key)) is None
    others = [(await store.create_key(KeyCreate(name=f"o{i}", team_id=old.id)))[1]
              for i in range(5)]
    for other in others:
        await directory.resolve(other)
    assert len(directory) == 3
    assert sum(map(len, directory._by_team.values())) == 3
    assert sum(map(len, directory._by_key.values())) == 3
    directory.drop(team_id=old.id)
    assert len(directory) == 0 and not directory._by_team and not directory._by_key


async def test_refresh_heals_a_missed_change(store: KeyStore) -> None:
    """A change made without changed() reaches the cache at the next refresh; a deleted or
    rotated key leaves it; an unchanged entry stays the same object."""
    record, key = await store.create_key(KeyCreate(name="k", rpm=5))
    gone, gone_key = await store.create_key(KeyCreate(name="gone"))
    _, same_key = await store.create_key(KeyCreate(name="same"))
    directory = KeyDirectory(store, None)
    for k in (key, gone_key, same_key):
        await directory.resolve(k)
    unchanged = directory.cached(hash_key(same_key))
    async with store.engine.begin() as conn:
        await conn.execute(update(ApiKey).where(ApiKey.id == record.id).values(rpm=9))
    await store.rotate_key(gone.id)
    await directory.refresh()
    entry = directory.cached(hash_key(key))
    assert entry is not None and entry.key.rpm == 9
    assert directory.cached(hash_key(gone_key)) is None
    assert directory.cached(hash_key(same_key)) is unchanged


async def test_every_entry_dropped_or_replaced_is_told(store: KeyStore) -> None:
    """``on_dropped`` hears the hash of each entry that a change drops, a refresh replaces (not
    one it finds unchanged), the bound evicts, or a drop of everything clears."""
    team = await store.create_team(TeamCreate(name="t"))
    a_record, a = await store.create_key(KeyCreate(name="a", rpm=5))
    _, b = await store.create_key(KeyCreate(name="b", team_id=team.id))
    _, c = await store.create_key(KeyCreate(name="c"))
    _, d = await store.create_key(KeyCreate(name="d"))
    directory = KeyDirectory(store, None, max_entries=3)
    told: list[str] = []
    directory.on_dropped = told.append
    for key in (a, b, c):
        await directory.resolve(key)
    await directory.changed(team_id=team.id)
    assert told == [hash_key(b)]
    told.clear()
    await directory.resolve(b)
    async with store.engine.begin() as conn:
        await conn.execute(update(ApiKey).where(ApiKey.id == a_record.id).values(rpm=9))
    await directory.refresh()  # its first: re-reads all three, only a changed
    assert told == [hash_key(a)]
    told.clear()
    await directory.resolve(d)  # evicts the oldest cached, a
    assert told == [hash_key(a)]
    told.clear()
    directory.drop()
    assert sorted(told) == sorted(hash_key(k) for k in (b, c, d))


async def test_a_failing_on_dropped_neither_stops_the_drop_nor_raises(
        store: KeyStore, caplog: pytest.LogCaptureFixture) -> None:
    """A defect in what ``on_dropped`` calls (the limiter's ``forget``) is logged; the change
    still drops every matching entry and is published, and ``changed`` returns normally (it
    raised through the admin API's 500 and out of the subscriber, which stopped listening)."""
    team = await store.create_team(TeamCreate(name="t"))
    keys = [(await store.create_key(KeyCreate(name=n, team_id=team.id)))[1] for n in "ab"]
    directory = KeyDirectory(store, None)
    told: list[str] = []

    def broken(digest: str) -> None:
        told.append(digest)
        raise RuntimeError("a defect")

    directory.on_dropped = broken
    for key in keys:
        await directory.resolve(key)
    with caplog.at_level("ERROR", logger="switchboard.keys"):
        await directory.changed(team_id=team.id)
    assert sorted(told) == sorted(hash_key(k) for k in keys)
    assert "forgetting a dropped key's caller failed" in caplog.text
    assert len(directory) == 0  # every entry of the team dropped


async def test_resolve_begun_before_a_change_does_not_cache(
        store: KeyStore, database: Database) -> None:
    """A resolve in flight when changed() runs returns its result but does not write it back."""
    record, key = await store.create_key(KeyCreate(name="k"))
    directory = KeyDirectory(store, None)
    locker = await asyncpg.connect(database.url)
    try:
        transaction = locker.transaction()
        await transaction.start()
        await locker.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        pending = asyncio.create_task(directory.resolve(key))
        await asyncio.sleep(0)  # the resolve has begun and waits on the lock
        assert not pending.done()
        await directory.changed(key_id=record.id)
        await transaction.rollback()
        entry = await pending
    finally:
        await locker.close()
    assert entry is not None and entry.key.id == record.id
    assert directory.cached(hash_key(key)) is None
    assert await directory.resolve(key) is directory.cached(hash_key(key))


async def test_change_reaches_another_directory_within_a_second(
        store: KeyStore, shared_redis: aioredis.Redis) -> None:
    """Two directories sharing Redis: a change published by one drops the entry in the other
    within a second; the message carries ids, never the key."""
    record, key = await store.create_key(KeyCreate(name="k"))
    listener = shared_redis.pubsub()
    await listener.subscribe(CHANNEL)
    clients = [aioredis.Redis(host="127.0.0.1", port=6379) for _ in range(2)]
    first, second = (KeyDirectory(store, client) for client in clients)
    await first.start()
    await second.start()
    try:
        await asyncio.wait_for(second.subscribed.wait(), 5)
        await first.resolve(key)
        await second.resolve(key)
        await first.changed(key_id=record.id)
        assert first.cached(hash_key(key)) is None
        assert await eventually(lambda: second.cached(hash_key(key)) is None, within=1.0)
        seen: list[bytes] = []
        deadline = time.monotonic() + 5
        while not any(record.id.encode() in data for data in seen):
            assert time.monotonic() < deadline, f"no message for {record.id}: {seen}"
            message = await listener.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message is not None:
                seen.append(message["data"])
        mine = [json.loads(data) for data in seen if record.id.encode() in data]
        assert mine == [{"key_id": record.id, "team_id": None}]
        assert not any(key.encode() in data for data in seen)
    finally:
        await listener.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # redis-py < 8.2 lacks hints
        for directory, client in zip((first, second), clients, strict=True):
            await directory.aclose()
            await client.aclose()


async def test_lost_subscription_drops_the_cache_on_reconnect(store: KeyStore) -> None:
    """While Redis is down cached keys are served; once the subscriber is back (it may have
    missed messages) the whole cache is dropped."""
    server = PrivateRedis()
    server.start()
    client = aioredis.Redis.from_url(server.url, socket_connect_timeout=0.5)
    directory = KeyDirectory(store, client)
    try:
        await directory.start()
        await asyncio.wait_for(directory.subscribed.wait(), 5)
        _, key = await store.create_key(KeyCreate(name="k"))
        entry = await directory.resolve(key)
        server.stop()
        assert await eventually(lambda: not directory.subscribed.is_set(), within=10)
        assert directory.cached(hash_key(key)) is entry
        server.start()
        await asyncio.wait_for(directory.subscribed.wait(), 10)
        assert directory.cached(hash_key(key)) is None
    finally:
        await directory.aclose()
        await client.aclose()
        server.stop()


async def test_without_redis_changes_stay_in_process(store: KeyStore) -> None:
    """No Redis: changed() drops locally; start/aclose run only the refresh task."""
    record, key = await store.create_key(KeyCreate(name="k"))
    directory = KeyDirectory(store, None, refresh_s=3600)
    await directory.start()
    try:
        await directory.resolve(key)
        await directory.changed(key_id=record.id)
        assert directory.cached(hash_key(key)) is None
    finally:
        await directory.aclose()


async def test_concurrent_first_uses_share_one_query(store: KeyStore) -> None:
    """Twenty concurrent resolves of an uncached key make one database query."""
    _, key = await store.create_key(KeyCreate(name="k"))
    statements: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "api_keys" in statement:
            statements.append(statement)

    event.listen(store.engine.sync_engine, "before_cursor_execute", count)
    try:
        directory = KeyDirectory(store, None)
        entries = await asyncio.gather(*(directory.resolve(key) for _ in range(20)))
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", count)
    assert len(statements) == 1
    assert entries[0] is not None and all(entry is entries[0] for entry in entries)


async def test_concurrent_first_uses_share_the_outage(
        store: KeyStore, database: Database) -> None:
    """When the shared query fails every waiter gets KeysUnavailable; the next call retries."""
    _, key = await store.create_key(KeyCreate(name="k"))
    directory = KeyDirectory(store, None)
    await database.drop()
    results = await asyncio.gather(*(directory.resolve(key) for _ in range(5)),
                                   return_exceptions=True)
    assert all(isinstance(result, KeysUnavailable) for result in results)
    with pytest.raises(KeysUnavailable):
        await directory.resolve(key)


class Rereads:
    """The key hashes each ``api_keys`` query of a store's engine asked for, query by query."""

    def __init__(self, store: KeyStore, hashes: Collection[str]) -> None:
        self.engine = store.engine.sync_engine
        self.hashes = set(hashes)
        self.queries: list[set[str]] = []
        self.began = asyncio.Event()

    def __enter__(self) -> Rereads:
        event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: object, _cursor: object, statement: str, parameters: object,
              *_args: object) -> None:
        if "FROM api_keys" in statement:
            values = parameters if isinstance(parameters, (list, tuple)) else ()
            self.queries.append({v for v in values if v in self.hashes})
            self.began.set()


async def refresh_overtaken(directory: KeyDirectory, store: KeyStore, database: Database,
                            keys: list[str], key_id: str) -> None:
    """A refresh whose re-read of ``keys`` waits on a lock of ``api_keys`` while
    ``changed(key_id)`` runs."""
    locker = await asyncpg.connect(database.url)
    try:
        transaction = locker.transaction()
        await transaction.start()
        await locker.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        with Rereads(store, [hash_key(key) for key in keys]) as rereads:
            refreshing = asyncio.create_task(directory.refresh())
            await asyncio.wait_for(rereads.began.wait(), 5)  # its re-read waits on the lock
            await directory.changed(key_id=key_id)
            await transaction.rollback()
            await refreshing
    finally:
        await locker.close()


async def test_refresh_in_flight_does_not_bring_back_a_dropped_entry(
        store: KeyStore, database: Database) -> None:
    """A refresh re-reading while changed() runs leaves the change's drop in place."""
    record, key = await store.create_key(KeyCreate(name="k"))
    _, other = await store.create_key(KeyCreate(name="other"))
    directory = KeyDirectory(store, None)
    await directory.resolve(key)
    await directory.resolve(other)
    await refresh_overtaken(directory, store, database, [key, other], record.id)  # the first
    assert directory.cached(hash_key(key)) is None


async def test_started_directory_refreshes_by_itself(store: KeyStore) -> None:
    """start() runs the periodic refresh: a change made behind its back arrives."""
    record, key = await store.create_key(KeyCreate(name="k", rpm=1))
    directory = KeyDirectory(store, None, refresh_s=0.05)
    await directory.resolve(key)
    await directory.start()
    try:
        async with store.engine.begin() as conn:
            await conn.execute(update(ApiKey).where(ApiKey.id == record.id).values(rpm=2))

        def refreshed() -> bool:
            entry = directory.cached(hash_key(key))
            return entry is not None and entry.key.rpm == 2

        assert await eventually(refreshed, within=10)
    finally:
        await directory.aclose()


async def test_refresh_rereads_only_the_changed_keys(store: KeyStore) -> None:
    """After its first refresh (every cached key), a refresh re-reads only the keys the key
    change log names, the keys of a changed team, and nothing when nothing changed since."""
    team = await store.create_team(TeamCreate(name="t"))
    made = [await store.create_key(KeyCreate(name=f"k{i}", team_id=team.id if i < 10 else None))
            for i in range(30)]
    directory = KeyDirectory(store, None)
    for _, key in made:
        await directory.resolve(key)
    hashes = [hash_key(key) for _, key in made]
    with Rereads(store, hashes) as rereads:
        await directory.refresh()
        assert set().union(*rereads.queries) == set(hashes)
        unchanged = directory.cached(hashes[20])
        async with store.engine.begin() as conn:  # behind the directory's back
            await conn.execute(update(ApiKey).where(ApiKey.id == made[25][0].id).values(rpm=7))
        rereads.queries.clear()
        await directory.refresh()
        assert rereads.queries == [{hashes[25]}]
        entry = directory.cached(hashes[25])
        assert entry is not None and entry.key.rpm == 7
        assert directory.cached(hashes[20]) is unchanged
        async with store.engine.begin() as conn:
            await conn.execute(update(Team).where(Team.id == team.id).values(rpm=50))
        rereads.queries.clear()
        await directory.refresh()
        assert set().union(*rereads.queries) == set(hashes[:10])
        entry = directory.cached(hashes[3])
        assert entry is not None and entry.team is not None and entry.team.rpm == 50
        rereads.queries.clear()
        await directory.refresh()
        assert rereads.queries == []


async def test_a_directory_started_empty_never_rereads_everything(store: KeyStore) -> None:
    """A directory started with an empty cache reads the log's clock at start: its refreshes
    re-read only what changed after it, never every key."""
    made = [await store.create_key(KeyCreate(name=f"k{i}", rpm=1)) for i in range(5)]
    hashes = [hash_key(key) for _, key in made]
    directory = KeyDirectory(store, None, refresh_s=0.05)
    with Rereads(store, hashes) as rereads:
        await directory.start()
        try:
            for _, key in made:
                await directory.resolve(key)
            rereads.queries.clear()
            async with store.engine.begin() as conn:
                await conn.execute(update(ApiKey).where(ApiKey.id == made[2][0].id)
                                   .values(rpm=2))

            def refreshed() -> bool:
                entry = directory.cached(hashes[2])
                return entry is not None and entry.key.rpm == 2

            assert await eventually(refreshed, within=10)
            await asyncio.sleep(0.2)  # a few more refreshes, with nothing new to read
        finally:
            await directory.aclose()
    assert rereads.queries and set().union(*rereads.queries) == {hashes[2]}


async def test_a_change_during_a_refresh_leaves_no_stale_entry(
        store: KeyStore, database: Database) -> None:
    """A refresh whose re-read a change overtook (``changed()`` while it read) drops what it
    read instead of keeping entries that may predate the change; they are read afresh at
    their next use."""
    first, first_key = await store.create_key(KeyCreate(name="a", rpm=1))
    second, second_key = await store.create_key(KeyCreate(name="b", rpm=1))
    directory = KeyDirectory(store, None)
    await directory.resolve(first_key)
    await directory.resolve(second_key)
    await directory.refresh()
    await store.update_key(first.id, KeyUpdate(rpm=2))
    await store.update_key(second.id, KeyUpdate(rpm=2))
    await refresh_overtaken(directory, store, database, [first_key, second_key], first.id)
    assert directory.cached(hash_key(second_key)) is None
    entry = await directory.resolve(second_key)
    assert entry is not None and entry.key.rpm == 2
    with Rereads(store, [hash_key(second_key)]) as rereads:
        await directory.refresh()
    assert rereads.queries == []  # the changes were read: nothing is left to re-read


async def test_a_log_that_forgot_means_rereading_everything(
        store: KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the last read is older than the log keeps changes, a refresh re-reads every
    cached key (the changes in between may be pruned), and prunes what is past keeping."""
    monkeypatch.setattr(directory_module, "OVERLAP_S", 0.05)
    monkeypatch.setattr(directory_module, "KEPT_S", 0.3)
    monkeypatch.setattr(directory_module, "PRUNE_EVERY_S", 0.0)
    made = [await store.create_key(KeyCreate(name=f"k{i}")) for i in range(3)]
    hashes = [hash_key(key) for _, key in made]
    directory = KeyDirectory(store, None)
    for _, key in made:
        await directory.resolve(key)
    await directory.refresh()
    await store.update_key(made[0][0].id, KeyUpdate(rpm=1))
    await asyncio.sleep(0.5)
    with Rereads(store, hashes) as rereads:
        await directory.refresh()
    assert set().union(*rereads.queries) == set(hashes)
    entry = directory.cached(hashes[0])
    assert entry is not None and entry.key.rpm == 1
    changes, _ = await store.changes_since(0.0)
    assert changes == []
