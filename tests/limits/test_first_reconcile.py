"""A starting gateway serves only once its first budget reconcile has read the call log: with
empty counters (a Redis restarted empty or flushed, an in-process limiter after a restart) a
burst of calls would otherwise be admitted against them before anything was counted."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from app.db.engine import make_engine
from app.keys.model import KeyCreate
from app.keys.store import KeyStore
from app.limits import Bucket, LocalLimiter
from app.limits.budget import Reconciles, turn_key
from app.limits.model import period_name
from app.limits.redis import PREFIX, spend_key
from app.main import create_app
from app.resources import resources_of
from app.settings import Settings
from tests.calllog.freeze_proxy import FreezeProxy
from tests.calllog.servers import PrivateRedis
from tests.limits.test_budget import log_calls


async def _spent_key(settings: Settings) -> str:
    """The call log of ``settings`` made (by a gateway's start), with a key whose day budget
    of $1.00 has $0.75 spent in it; returns the key's id."""
    app = create_app(settings).app
    async with app.router.lifespan_context(app):
        pass
    engine = make_engine(settings.database_url)
    try:
        key, _ = await KeyStore(engine).create_key(
            KeyCreate(name="spent", budget_usd=1.0, budget_period="day"))
        await log_calls(engine, (key.id, None, "0.75", datetime.now(UTC)))
    finally:
        await engine.dispose()
    return key.id


def _settings(tmp_path: Path, redis_url: str | None = None) -> Settings:
    return Settings(master_key=SecretStr("sk-first-reconcile-master"), config=None,
                    database_url=f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}",
                    spool_dir=tmp_path / "spool", redis_url=redis_url, metrics=False)


async def test_an_in_process_limiter_holds_the_logs_spend_before_the_first_call(
        tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    key_id = await _spent_key(settings)
    app = create_app(settings).app
    async with app.router.lifespan_context(app):
        limiter = resources_of(app).limiter
        assert isinstance(limiter, LocalLimiter)
        # Nothing awaited since the start: what the counters hold, the start-up put there.
        assert limiter.spent_usd(Bucket("key", key_id, None, None, 1.0, "day")) == \
            pytest.approx(0.75)


async def test_counters_lost_in_redis_hold_the_logs_spend_before_the_first_call(
        tmp_path: Path, private_redis: PrivateRedis) -> None:
    """Redis restarted empty: a starting gateway refills the counters before it serves, even
    when another gateway has just taken the reconcile turn (and may not have read the log
    yet)."""
    settings = _settings(tmp_path, private_redis.url)
    key_id = await _spent_key(settings)
    private_redis.stop()
    private_redis.start()  # empty
    counter = spend_key(PREFIX, tag=key_id, scope="key", id=key_id,
                        period=period_name("day", datetime.now(UTC)))
    client = aioredis.Redis.from_url(private_redis.url)
    app = create_app(settings).app
    try:
        assert await client.set(turn_key(PREFIX), b"1", px=60_000)
        async with app.router.lifespan_context(app):
            assert await client.get(counter) == b"750000000"  # $0.75 in nano-dollars
    finally:
        await client.aclose()


async def test_a_first_reconcile_that_fails_or_hangs_does_not_keep_the_gateway_from_serving(
        caplog: pytest.LogCaptureFixture) -> None:
    """A failing first reconcile counts as done (logged; tried again next interval); one that
    hangs is waited for only the bound, with a warning."""
    async def fails() -> int:
        raise OSError("connection refused")

    failing = Reconciles.each(fails)
    looping = asyncio.create_task(failing.loop(3600, None))
    try:
        await failing.started(30)
        assert failing.done.is_set()
    finally:
        looping.cancel()

    async def hangs() -> int:
        await asyncio.sleep(3600)
        return 0

    hanging = Reconciles.each(hangs)
    looping = asyncio.create_task(hanging.loop(3600, None))
    try:
        with caplog.at_level(logging.WARNING, "switchboard.limits"):
            await hanging.started(0.05)
        assert not hanging.done.is_set()
        assert "budgets not reconciled from the call log within" in caplog.text
    finally:
        looping.cancel()


async def test_a_database_found_hung_at_start_is_not_waited_for_again(
        tmp_path: Path, proxy: FreezeProxy, caplog: pytest.LogCaptureFixture) -> None:
    """The call log's start-up check found the database hung (and waited its bound for it):
    the start does not wait for the first reconcile as well (its bound came on top)."""
    proxy.freeze()
    settings = Settings(master_key=SecretStr("sk-first-reconcile-master"), config=None,
                        database_url=proxy.url("postgresql://postgres@127.0.0.1:5432/hung"),
                        spool_dir=tmp_path / "spool", metrics=False)
    app = create_app(settings).app
    with caplog.at_level(logging.INFO):
        async with app.router.lifespan_context(app):
            calllog = resources_of(app).calllog
            assert calllog is not None and not calllog.writer.conditions()["store"].up
    assert "budgets not reconciled from the call log within" not in caplog.text
