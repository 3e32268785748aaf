"""A Redis outage under a running gateway whose database stays up: its condition (``/readyz``,
``switchboard_calllog_spool_up{spool="redis"}``) comes back with Redis even when no call is made
meanwhile, and the calls made during the outage are added to the day counters once Redis is
back (the live stream's entries are not: README "The call log")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import redis

from tests.api.conftest import MASTER_KEY
from tests.calllog.servers import PrivateRedis
from tests.calllog.test_sick_database import gateway, readyz, settings_for, until


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


def redis_up(base_url: str) -> bool:
    up: bool = readyz(base_url)["calllog"]["spools"]["redis"]["up"]
    return up


def chat(base_url: str, n: int) -> None:
    with openai.OpenAI(base_url=base_url + "/v1", api_key=MASTER_KEY, max_retries=0) as client:
        for _ in range(n):
            client.chat.completions.create(model="chat",
                                           messages=[{"role": "user", "content": "hi"}])


def counted(server: PrivateRedis, kind: str, name: str) -> int:
    """Requests in every day's counter of one model or caller (a test may cross midnight)."""
    with redis.Redis(port=server.port) as client:
        keys = list(client.scan_iter(match=f"switchboard:usage:*:{kind}:{name}"))
        return sum(int(client.hget(key, "requests") or 0) for key in keys)


def test_redis_back_is_seen_without_a_call(private_redis: PrivateRedis, simulator: str,
                                           tmp_path: Path) -> None:
    """Redis stopped and a call made (Redis marked down), then Redis back and no call: the
    gateway finds it back by itself."""
    settings = settings_for(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}",
                            private_redis.url)
    with gateway(settings, simulator) as (base, _):
        chat(base, 1)
        assert redis_up(base)
        private_redis.stop()
        chat(base, 1)
        until(lambda: not redis_up(base))
        private_redis.start()
        until(lambda: redis_up(base))


def test_calls_made_while_redis_is_down_reach_the_day_counters(
        private_redis: PrivateRedis, simulator: str, tmp_path: Path) -> None:
    """Calls answered and stored while Redis is down are counted once it is back (a fresh,
    empty Redis here: the counters hold exactly the outage's calls)."""
    settings = settings_for(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}",
                            private_redis.url)
    with gateway(settings, simulator) as (base, writer):
        chat(base, 1)
        until(lambda: writer.stats.stored == 1)
        private_redis.stop()
        chat(base, 5)
        until(lambda: writer.stats.stored == 6)
        assert not redis_up(base)
        private_redis.start()
        until(lambda: counted(private_redis, "model", "chat") == 5)
        assert counted(private_redis, "caller", "master") == 5
