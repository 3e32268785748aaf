"""The limiter's ``SentinelRespClient`` and the redis-py clients of ``RedisPools`` on a real
master, replica and sentinel: they write to the master, and follow it through a failover."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.limits.model import Bucket
from app.limits.redis import RedisLimiter
from app.limits.sentinel import SentinelRespClient
from app.resources import RedisPools
from app.sentinel_url import SentinelUrl
from tests.servers import free_port

MASTER = "mymaster"
WAIT_S = 30.0


def _cli(port: int, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True,
                          text=True, timeout=5).stdout.strip()


def _until(what: str, check: object) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class SentinelSet:
    """A master, a replica of it and one sentinel watching them, on free ports."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sb-sentinel-"))
        self.ports = [free_port(), free_port()]
        self.sentinel = free_port()
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        base = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        master, replica = self.ports
        self._spawn(["redis-server", "--port", str(master), "--dir", str(self.dir), *base])
        self._spawn(["redis-server", "--port", str(replica), "--dir", str(self.dir),
                     "--replicaof", "127.0.0.1", str(master), *base])
        conf = self.dir / "sentinel.conf"
        conf.write_text(f"port {self.sentinel}\nbind 127.0.0.1\ndir {self.dir}\n"
                        f"sentinel monitor {MASTER} 127.0.0.1 {master} 1\n"
                        f"sentinel down-after-milliseconds {MASTER} 500\n"
                        f"sentinel failover-timeout {MASTER} 2000\n")
        self._spawn(["redis-server", str(conf), "--sentinel"])
        _until("the replica to sync",
               lambda: "master_link_status:up" in _cli(replica, "info", "replication"))
        _until("the sentinel to see the replica", lambda: str(replica) in _cli(
            self.sentinel, "sentinel", "replicas", MASTER))

    def _spawn(self, args: list[str]) -> None:
        self.procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL))

    def master_port(self) -> int:
        return int(_cli(self.sentinel, "sentinel", "get-master-addr-by-name",
                        MASTER).split()[-1])

    def failover(self) -> int:
        """Promote the replica; its port once the sentinel names it and it is a master."""
        old = self.master_port()
        new = next(p for p in self.ports if p != old)
        _until("the failover to be accepted", lambda: _cli(
            self.sentinel, "sentinel", "failover", MASTER) == "OK" or self.master_port() == new)
        _until("the new master", lambda: self.master_port() == new and _cli(
            new, "role").startswith("master"))
        return new

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel}/{MASTER}/0"

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def sentinel_set() -> Iterator[SentinelSet]:
    """One master/replica/sentinel set for this module's tests."""
    servers = SentinelSet()
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


async def _admitted(limiter: RedisLimiter, bucket: Bucket) -> bool:
    return (await limiter.admit([bucket], 0)).admitted


async def _eventually(what: str, check: object) -> None:
    deadline = time.monotonic() + WAIT_S
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_limiter_and_redis_py_follow_a_failover(sentinel_set: SentinelSet) -> None:
    """Admissions count on the master and the call log's client writes there; after
    ``SENTINEL failover`` both reach the new master (polled with a deadline)."""
    pools = RedisPools.open(sentinel_set.url)
    client = pools.limiter
    assert isinstance(client, SentinelRespClient)
    # fail closed: an admission is only "admitted" when Redis answered it
    limiter = RedisLimiter(pools.limiter, timeout_s=0.5, fail_open=False,
                           budget_fail_open=False, prefix="sbsentinel")
    bucket = Bucket("key", "k1", 1000, None, None)
    try:
        await limiter.start()
        first = sentinel_set.master_port()
        assert await _admitted(limiter, bucket)
        assert client.resolved == ("127.0.0.1", first)
        await pools.calllog.xadd("sbsentinel:calls", {"call": "1"})
        assert _cli(first, "xlen", "sbsentinel:calls") == "1"
        assert _cli(first, "hlen", "sbsentinel:rl:{k1}:key:k1:req") == "1"
        # Both writes reach the replica before it is promoted (replication is asynchronous).
        replica = next(port for port in sentinel_set.ports if port != first)
        _until("the replica to have both writes", lambda: _cli(
            replica, "xlen", "sbsentinel:calls") == "1" and _cli(
            replica, "hlen", "sbsentinel:rl:{k1}:key:k1:req") == "1")

        second = sentinel_set.failover()

        async def limiter_follows() -> bool:
            return await _admitted(limiter, bucket) and client.resolved == (
                "127.0.0.1", second)
        await _eventually("the limiter on the new master", limiter_follows)

        async def calllog_follows() -> bool:
            # Until the sentinel turns the old master into a replica, a write can still land
            # there and be dropped when it resyncs (a forced failover loses such writes): a
            # write counts once the new master has it.
            try:
                await pools.calllog.xadd("sbsentinel:calls", {"call": "2"})
            except Exception:  # noqa: BLE001 - the old master refuses writes until it is dropped
                return False
            return int(_cli(second, "xlen", "sbsentinel:calls")) >= 2
        await _eventually("redis-py on the new master", calllog_follows)
        # both writes are on the new master: the first replicated, a second written there
        assert _cli(second, "xrange", "sbsentinel:calls", "-", "+", "COUNT", "1").split()[1:] \
            == ["call", "1"]
        # the admission before the failover (replicated) and at least one after it
        assert sum(map(int, _cli(second, "hvals", "sbsentinel:rl:{k1}:key:k1:req").split())) >= 2
        assert _cli(second, "role").startswith("master")
    finally:
        await limiter.aclose()
        await pools.aclose()


async def test_unknown_master_is_a_connection_error(sentinel_set: SentinelSet) -> None:
    """A master name the sentinel does not know fails the connection; it names the master."""
    client = SentinelRespClient(SentinelUrl.parse(
        f"redis+sentinel://127.0.0.1:{sentinel_set.sentinel}/nosuch"))
    try:
        with pytest.raises(ConnectionError, match=r"'nosuch'.*unknown master"):
            await client.execute([("PING",)])
    finally:
        await client.aclose()
