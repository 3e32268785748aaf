"""``KeyDirectory`` against a hung database and a hung Redis: a key not cached is refused within
the lookup bound (one wait, then at once while the database stays silent), cached keys go on,
and a key change's publish does not hold its admin answer."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from app.db.engine import make_engine
from app.db.migrate import upgrade
from app.keys import KeyCreate, KeyDirectory, KeyStore, KeysUnavailable
from app.keys.directory import DOWN_FOR_S, LOOKUP_TIMEOUT_S, PUBLISH_TIMEOUT_S
from app.keys.model import hash_key
from tests.calllog.freeze_proxy import FreezeProxy
from tests.calllog.servers import PrivateRedis
from tests.keys.test_admin_keys import client_of, keys_app
from tests.keys.test_directory import Database, admin_sql

NOT_A_MINUTE_S = 10.0
"""Far above the lookup bound (3 s) and far below what a hung database cost without it (62 s)."""


@pytest.fixture
async def database() -> AsyncIterator[Database]:
    """A migrated database of the test's own on the shared Postgres."""
    db = Database()
    await admin_sql(f'CREATE DATABASE "{db.name}"')
    await upgrade(db.url)
    yield db
    await db.drop()


async def timed_resolve(directory: KeyDirectory, key: str) -> tuple[str, float]:
    """What resolving ``key`` gave (``unavailable``, ``unknown`` or ``found``) and how long it
    took, at most ``NOT_A_MINUTE_S`` (a hang fails the test there)."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(NOT_A_MINUTE_S):
            entry = await directory.resolve(key)
    except KeysUnavailable:
        return "unavailable", time.monotonic() - started
    return "unknown" if entry is None else "found", time.monotonic() - started


async def test_a_hung_database_refuses_an_uncached_key_within_the_bound(
        database: Database, proxy: FreezeProxy) -> None:
    """Postgres hung: a cached key still resolves at once; an uncached one is KeysUnavailable
    after one LOOKUP_TIMEOUT_S (its concurrent lookups sharing that wait), and other uncached
    keys at once for DOWN_FOR_S; once the database answers, lookups succeed again."""
    direct = make_engine(database.url)
    engine = make_engine(proxy.url(database.url))
    try:
        store = KeyStore(direct)
        _, cached = await store.create_key(KeyCreate(name="cached"))
        _, other = await store.create_key(KeyCreate(name="other"))
        directory = KeyDirectory(KeyStore(engine), None)
        entry = await directory.resolve(cached)
        assert entry is not None
        proxy.freeze()
        outcome, took = await timed_resolve(directory, cached)
        assert outcome == "found" and took < 1, took
        started = time.monotonic()
        outcomes = await asyncio.gather(*(timed_resolve(directory, other) for _ in range(10)))
        waited = time.monotonic() - started
        assert {outcome for outcome, _ in outcomes} == {"unavailable"}
        assert LOOKUP_TIMEOUT_S - 0.1 <= waited < NOT_A_MINUTE_S, waited
        # Failed moments ago: another key not cached is refused without a wait.
        outcome, took = await timed_resolve(directory, "sk-sb-never-issued-" + "x" * 30)
        assert outcome == "unavailable" and took < LOOKUP_TIMEOUT_S / 2, took
        assert directory.cached(hash_key(cached)) is entry
        proxy.thaw()
        await asyncio.sleep(DOWN_FOR_S)
        assert (await timed_resolve(directory, other))[0] == "found"
    finally:
        proxy.thaw()
        await engine.dispose()
        await direct.dispose()


async def test_a_hung_database_costs_one_wait_then_one_probe_at_a_time(
        database: Database, proxy: FreezeProxy) -> None:
    """While the database stays hung, after DOWN_FOR_S one lookup asks it again, and lookups of
    other keys meanwhile are refused at once rather than each waiting out its own bound."""
    engine = make_engine(proxy.url(database.url))
    try:
        directory = KeyDirectory(KeyStore(engine), None, lookup_timeout_s=1.0, down_for_s=0.2)
        await directory.resolve("sk-sb-warm-the-pool-" + "w" * 30)  # unknown: connects once
        proxy.freeze()
        assert (await timed_resolve(directory, "sk-sb-first-" + "a" * 30))[0] == "unavailable"
        await asyncio.sleep(0.3)  # past down_for_s: the next lookup asks again
        probe = asyncio.ensure_future(timed_resolve(directory, "sk-sb-probe-" + "b" * 30))
        await asyncio.sleep(0.1)
        others = [await timed_resolve(directory, f"sk-sb-other-{i}-" + "c" * 30)
                  for i in range(5)]
        assert [outcome for outcome, _ in others] == ["unavailable"] * 5
        assert max(took for _, took in others) < 0.5
        assert (await probe)[0] == "unavailable"
    finally:
        proxy.thaw()
        await engine.dispose()


@pytest.fixture
def hung_redis() -> Iterator[PrivateRedis]:
    """A private Redis the test may SIGSTOP (continued and stopped afterwards)."""
    server = PrivateRedis()
    server.start()
    yield server
    assert server.pid is not None
    os.kill(server.pid, signal.SIGCONT)
    server.stop()


@pytest.fixture
async def gateway_redis(hung_redis: PrivateRedis) -> AsyncIterator[aioredis.Redis]:
    """A client as the gateway's (``app.resources.RedisPools``): a 5 s socket timeout."""
    client = aioredis.from_url(hung_redis.url, socket_connect_timeout=1.0, socket_timeout=5.0,
                               retry=Retry(NoBackoff(), 0))
    yield client
    await client.aclose()


async def test_a_revoke_answers_promptly_while_redis_hangs(
        database: Database, hung_redis: PrivateRedis, gateway_redis: aioredis.Redis) -> None:
    """Redis SIGSTOPped: POST /admin/keys/{id}/revoke answers 200 within about
    PUBLISH_TIMEOUT_S (the publish is given up, not waited for over redis-py's 5 s socket
    timeout), and the revocation is stored for the other gateways' refresh to find."""
    engine = make_engine(database.url)
    try:
        directory = KeyDirectory(KeyStore(engine), gateway_redis)
        record, key = await directory.store.create_key(KeyCreate(name="leaked"))
        await gateway_redis.publish("warm-up", "x")  # a pooled connection, as a gateway has
        assert hung_redis.pid is not None
        os.kill(hung_redis.pid, signal.SIGSTOP)
        async with client_of(keys_app(directory)) as admin:
            started = time.monotonic()
            answer = await admin.post(f"/admin/keys/{record.id}/revoke")
            took = time.monotonic() - started
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "revoked"
        assert took < PUBLISH_TIMEOUT_S + 2.0, took
        assert (await directory.store.get_key(record.id)).revoked_at is not None
        entry = await directory.resolve(key)
        assert entry is not None and entry.key.revoked_at is not None
        os.kill(hung_redis.pid, signal.SIGCONT)
        # The publish given up dropped its connection: the client works again with Redis.
        assert await gateway_redis.publish("after", "x") == 0
    finally:
        await engine.dispose()
