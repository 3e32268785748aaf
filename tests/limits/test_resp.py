"""The limiter's Redis client (``app.limits.resp``): the RESP parser byte by byte, URLs, and
round trips against real Redis servers (pipelining order, error replies as values, login,
database selection, lost and silent connections)."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from app.limits.resp import Address, ReplyError, RespClient, encode, parse
from tests.limits.conftest import Silent
from tests.servers import free_port

SHARED = "redis://127.0.0.1:6379/0"

REPLIES: list[tuple[bytes, object]] = [
    (b"+OK\r\n", "OK"),
    (b":-42\r\n", -42),
    (b"$5\r\nhe\r\no\r\n", b"he\r\no"),  # a bulk string may hold CRLF
    (b"$0\r\n\r\n", b""),
    (b"$-1\r\n", None),
    (b"*-1\r\n", None),
    (b"*3\r\n:1\r\n*2\r\n$1\r\na\r\n+b\r\n$-1\r\n", [1, [b"a", "b"], None]),
]


@pytest.mark.parametrize(("wire", "value"), REPLIES)
def test_every_reply_type_parses_whole_and_never_from_a_prefix(wire: bytes,
                                                               value: object) -> None:
    after_junk = b"junk" + wire + b"+next\r\n"
    assert parse(after_junk, 4) == (value, 4 + len(wire))
    for cut in range(len(wire)):  # every prefix is incomplete, not a wrong value
        reply, pos = parse(wire[:cut], 0)
        assert isinstance(reply, ReplyError) and reply.code == "INCOMPLETE" and pos == 0


def test_error_replies_are_values_with_their_code() -> None:
    reply, pos = parse(b"-NOSCRIPT No matching script.\r\n", 0)
    assert isinstance(reply, ReplyError) and reply.code == "NOSCRIPT" and pos == 31


def test_garbage_is_refused() -> None:
    with pytest.raises(ConnectionError):
        parse(b"?what\r\n", 0)


def test_encode_is_resp_arrays_of_bulk_strings() -> None:
    assert encode([("SET", "k", 5), (b"GET", "é")]) == (
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n5\r\n*2\r\n$3\r\nGET\r\n$2\r\n\xc3\xa9\r\n")


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://127.0.0.1:6380/2", Address(port=6380, db=2)),
    ("redis://redis.internal", Address(host="redis.internal")),
    ("redis://:s%40cret@h:1", Address(host="h", port=1, password="s@cret")),
    ("redis://app:pw@h/0?db=5", Address(host="h", username="app", password="pw", db=5)),
    ("unix:///run/redis.sock?db=1", Address(path="/run/redis.sock", db=1)),
])
def test_urls(url: str, expected: Address) -> None:
    assert Address.parse(url) == expected


def test_tls_urls() -> None:
    verified = Address.parse("rediss://h:6380/0")
    assert verified.tls is not None and verified.tls.verify_mode == ssl.CERT_REQUIRED
    unverified = Address.parse("rediss://h/0?ssl_cert_reqs=none")
    assert unverified.tls is not None and unverified.tls.verify_mode == ssl.CERT_NONE


@pytest.mark.parametrize("url", ["http://:topsecret@h/0", "redis://:topsecret@h/zero",
                                 "rediss://:topsecret@h/0?ssl_cert_reqs=maybe", "unix://"])
def test_bad_urls_are_refused_without_the_password(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        Address.parse(url)
    assert "topsecret" not in str(caught.value)


@pytest.fixture
async def client() -> AsyncIterator[RespClient]:
    resp = RespClient.from_url(SHARED)
    yield resp
    await resp.aclose()


async def test_one_round_trip_many_commands_errors_in_place(client: RespClient) -> None:
    replies = await client.execute([("ECHO", "a"), ("NOSUCHCOMMAND",), ("PING",), ("ECHO", 7)])
    assert replies[0] == b"a" and replies[2] == "PONG" and replies[3] == b"7"
    assert isinstance(replies[1], ReplyError) and replies[1].code == "ERR"


async def test_concurrent_round_trips_get_their_own_replies(client: RespClient) -> None:
    sizes = list(range(1, 60))
    answers = await asyncio.gather(*(
        client.execute([("ECHO", f"{n}-{i}" * n) for i in range(n)]) for n in sizes))
    for n, replies in zip(sizes, answers, strict=True):
        assert replies == [f"{n}-{i}".encode() * n for i in range(n)]


async def test_a_large_reply_arriving_in_pieces(client: RespClient) -> None:
    big = "x" * 3_000_000
    assert await client.execute([("ECHO", big), ("PING",)]) == [big.encode(), "PONG"]


async def test_a_killed_connection_fails_its_round_trips_and_the_next_reconnects(
        client: RespClient) -> None:
    admin = aioredis.from_url(SHARED)
    try:
        name = f"resp-test-{time.monotonic_ns()}"
        assert await client.execute([("CLIENT", "SETNAME", name)]) == ["OK"]
        blocked = asyncio.ensure_future(client.execute([("BLPOP", f"{name}:never", 10)]))
        await asyncio.sleep(0.1)
        assert await admin.client_kill_filter(_id=str(await client_id(admin, name))) == 1
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(blocked, 5)
        assert await client.execute([("PING",)]) == ["PONG"]
    finally:
        await admin.aclose()


async def client_id(admin: aioredis.Redis, name: str) -> int:
    for entry in await admin.client_list():
        if entry["name"] == name:
            return int(entry["id"])
    raise AssertionError(f"no client named {name}")


async def test_a_silent_server_times_out_and_is_dropped(silent: Silent) -> None:
    """No reply within reply_timeout_s: TimeoutError, the connection dropped, the next round
    trip on a new one."""
    resp = RespClient.from_url(f"redis://127.0.0.1:{silent.port}", reply_timeout_s=0.2)
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(resp.execute([("PING",)]), 5)
        assert 0.2 <= time.monotonic() - started < 2
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(resp.execute([("PING",)]), 5)
        assert len(silent.connections) == 2
    finally:
        await resp.aclose()


async def test_nothing_listening_is_a_connection_error() -> None:
    resp = RespClient.from_url(f"redis://127.0.0.1:{free_port()}/0", connect_timeout_s=1)
    try:
        with pytest.raises(ConnectionError):
            await resp.execute([("PING",)])
    finally:
        await resp.aclose()


@pytest.fixture
def guarded() -> Iterator[int]:
    """A private redis-server with a password (``topsecret``); its port."""
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port),
                             "--save", "", "--appendonly", "no", "--requirepass", "topsecret"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while subprocess.run(["redis-cli", "-p", str(port), "-a", "topsecret", "--no-auth-warning",
                          "ping"], capture_output=True).stdout.strip() != b"PONG":
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(timeout=10)


async def test_login_and_database(guarded: int) -> None:
    resp = RespClient.from_url(f"redis://:topsecret@127.0.0.1:{guarded}/3")
    check = aioredis.from_url(f"redis://:topsecret@127.0.0.1:{guarded}/3")
    try:
        assert await resp.execute([("SET", "where", "db3")]) == ["OK"]
        assert await check.get("where") == b"db3"
    finally:
        await resp.aclose()
        await check.aclose()


async def test_a_wrong_password_is_refused_without_being_named(guarded: int) -> None:
    resp = RespClient.from_url(f"redis://:wrongsecret@127.0.0.1:{guarded}/0")
    try:
        with pytest.raises(ConnectionError) as caught:
            await resp.execute([("PING",)])
        assert "wrongsecret" not in str(caught.value)
    finally:
        await resp.aclose()


async def test_a_password_the_server_does_not_need_logs_in_as_redis_py_does() -> None:
    """A URL with a password, to a Redis with none (the shared one: a password left in an env
    file): redis-py connects, so the limiter's client must too, or limits would go unenforced
    while everything else says Redis is up. A real password's refusal is above."""
    url = "redis://:left-over-password@127.0.0.1:6379/0"
    resp, check = RespClient.from_url(url), aioredis.from_url(url)
    key = f"test:resp:nopass:{time.monotonic_ns()}"
    try:
        assert await resp.execute([("SET", key, "1", "EX", "60")]) == ["OK"]
        assert await check.get(key) == b"1"
    finally:
        await resp.aclose()
        await check.aclose()


async def test_a_closed_client_refuses(client: RespClient) -> None:
    await client.aclose()
    with pytest.raises(ConnectionError):
        await client.execute([("PING",)])


async def test_send_then_hands_replies_over_and_survives_a_failing_receiver(
        client: RespClient, caplog: pytest.LogCaptureFixture) -> None:
    """``send_then`` delivers each round trip's replies to its callback, in order, on a new and
    on a live connection; a callback that raises is logged and the round trips behind it still
    get theirs."""
    got: asyncio.Queue[object] = asyncio.Queue()

    def broken(result: list[object] | BaseException) -> None:
        raise RuntimeError("a bug in the receiver")

    client.send_then(encode([("PING",)]), 1, got.put_nowait)  # not connected: connects first
    assert await asyncio.wait_for(got.get(), 5) == ["PONG"]
    client.send_then(encode([("ECHO", "a")]), 1, broken)
    client.send_then(encode([("ECHO", "b"), ("ECHO", "c")]), 2, got.put_nowait)
    assert await asyncio.wait_for(got.get(), 5) == [b"b", b"c"]
    assert "receiver failed" in caplog.text
