"""The Redis spool on a Sentinel-managed Redis (a real master, replica and sentinel): a batch
spooled after a failover reaches the new master, not the old one that Sentinel is about to
demote (its resync would erase the batch after the writer had dropped it from its journal)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest

from app.calllog.record import Row
from app.calllog.redis_spool import RedisSpool
from app.calllog.seams import SpoolUnavailable
from app.resources import RedisPools
from tests.calllog.test_redis_spool import make_row
from tests.limits.test_sentinel import SentinelSet, _cli, _until


@pytest.fixture
def sentinel_set() -> Iterator[SentinelSet]:
    """A master/replica/sentinel set of its own: each test fails it over or stops a part."""
    servers = SentinelSet()
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


def _xlen(port: int, stream: str) -> int:
    return int(_cli(port, "xlen", stream) or 0)


async def _put_once_confirmed(spool: RedisSpool, rows: list[Row]) -> None:
    """``put`` again while it answers ``SpoolUnavailable`` (until the sentinel ends the failover
    it runs, nothing confirms a master), as the writer does after its ``retry_s``."""
    deadline = time.monotonic() + 30
    while True:
        try:
            await spool.put(rows)
            return
        except SpoolUnavailable as exc:
            assert "failover may be under way" in str(exc) or "different masters" in str(exc) \
                or "master moved again" in str(exc)
            assert time.monotonic() < deadline, f"the spool never confirmed a master: {exc}"
            await asyncio.sleep(0.1)


async def test_a_batch_spooled_after_a_failover_reaches_the_new_master(
        sentinel_set: SentinelSet) -> None:
    """The spool's pooled connection reaches the old master, which stays a writable master for
    seconds after ``SENTINEL FAILOVER``; the next ``put`` still ends up on the new master."""
    pools = RedisPools.open(sentinel_set.url)
    stream = f"test:spool:{uuid.uuid4().hex}"
    spool = RedisSpool(pools.calllog, stream=stream, consumer="w1")
    try:
        first = sentinel_set.master_port()
        await spool.put([make_row(1)])  # the pool now holds a connection to the first master
        assert _xlen(first, stream) == 1
        second = next(port for port in sentinel_set.ports if port != first)
        _until("the replica to have the row", lambda: _xlen(second, stream) == 1)

        assert sentinel_set.failover() == second
        # Sentinel demotes the old master only once it has reported its role for a while
        # (seconds): it still takes writes now, as in the defect.
        assert _cli(first, "role").startswith("master")
        await _put_once_confirmed(spool, [make_row(n) for n in range(2, 12)])

        assert _xlen(second, stream) == 11  # the new master has every row
        assert _cli(second, "role").startswith("master")
        assert await spool.pending_count() == 11
    finally:
        await pools.aclose()


async def test_a_batch_no_sentinel_confirms_is_refused(sentinel_set: SentinelSet) -> None:
    """With the sentinel gone, nothing can say the master is still the master: ``put`` raises
    ``SpoolUnavailable`` (the writer then spools to the local file) instead of trusting it."""
    pools = RedisPools.open(sentinel_set.url)
    stream = f"test:spool:{uuid.uuid4().hex}"
    spool = RedisSpool(pools.calllog, stream=stream, consumer="w1")
    try:
        await spool.put([make_row(1)])
        sentinel = sentinel_set.procs[-1]  # started last, after the master and the replica
        sentinel.terminate()
        sentinel.wait(timeout=10)
        with pytest.raises(SpoolUnavailable, match="no sentinel confirmed master 'mymaster'"):
            await spool.put([make_row(2)])
    finally:
        await pools.aclose()
