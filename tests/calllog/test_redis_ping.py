"""The call log's start-up ping says why Redis did not answer, even when the error has no
words of its own (a timeout's message is empty: the log read ``Redis unavailable (redis: )``)."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from app.calllog.runtime import _ping


async def test_a_hung_redis_is_named_by_its_error_type() -> None:
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accepts, never answers

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = aioredis.Redis(host="127.0.0.1", port=port, socket_timeout=0.2)
    try:
        said = await _ping(client)
    finally:
        await client.aclose()
        for writer in held:
            writer.close()
        server.close()
    assert said is not None and said != "redis: " and said.startswith("redis: "), said
