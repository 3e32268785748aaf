"""The call log's ``Health``: which parts a shutdown's last flush tries again."""

from __future__ import annotations

import logging

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from app.calllog.condition import UP, Health
from app.resources import RedisPools


def health() -> Health:
    return Health(logging.getLogger("test.calllog"), store=UP, redis=True, retry_s=60.0,
                  warn_every_s=60.0)


@pytest.mark.parametrize("reason", ["unreachable", "unmigrated", "write_failed"])
def test_a_shutdown_tries_a_failed_store_and_redis_again(reason: str) -> None:
    parts = health()
    parts.store_failed(reason, "detail")
    parts.redis("down")
    assert not parts.store_usable() and not parts.redis_usable()  # paused for retry_s
    parts.resume()
    assert parts.store_usable() and parts.redis_usable()


def test_a_shutdown_does_not_wait_on_a_store_whose_last_write_timed_out() -> None:
    """A hung database: a second try would hold the shutdown for another store timeout."""
    parts = health()
    parts.store_failed("timeout", "no commit within 5.0s")
    parts.redis("down")
    parts.resume()
    assert not parts.store_usable()
    assert parts.redis_usable()


async def test_redis_down_through_sentinels_is_a_short_detail() -> None:
    """Sentinels that cannot be reached: ``/readyz``'s detail of the Redis spool names them by
    address (redis-py's message quoted each sentinel client's repr, every connection setting
    included)."""
    pools = RedisPools.open("redis+sentinel://:Pw-1@127.0.0.1:1,127.0.0.1:2/mymaster")
    try:
        with pytest.raises(RedisConnectionError) as caught:
            await pools.calllog.ping()
    finally:
        await pools.aclose()
    parts = health()
    parts.redis(str(caught.value))
    detail = parts.spools["redis"].detail or ""
    assert detail.startswith("No master found for 'mymaster' : 127.0.0.1:1 - ")
    assert "127.0.0.1:2 - " in detail
    assert "<" not in detail and "Pw-1" not in detail and len(detail) < 400, detail
