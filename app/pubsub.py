"""Following one Redis pub/sub channel for a process's lifetime, through Redis outages: the
key directory's invalidations (``app.keys``) and the shared circuit breakers
(``app.routing.shared``) both listen this way."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from app.background import pause, stop_if_cancelled

log = logging.getLogger("switchboard")

RECONNECT_S = 0.5
"""Pause between attempts to resubscribe after losing Redis."""
POLL_S = 1.0
"""Longest wait for one message (the subscriber's health checks run in between)."""


async def follow(redis: aioredis.Redis, channel: str, *, what: str,
                 on_message: Callable[[Any], None],
                 on_subscribed: Callable[[bool], Awaitable[None]],
                 subscribed: asyncio.Event,
                 on_reconnect: Callable[[Any], Awaitable[None]] | None = None) -> None:
    """Subscribe to ``channel`` and hand each message's data to ``on_message``, forever.

    ``on_subscribed(lost)`` runs after every subscription (``lost``: messages may have been
    missed since the last one); ``subscribed`` is set while listening; ``on_reconnect`` runs
    when redis-py reconnects the subscription's connection by itself, which would otherwise
    hide a gap. ``what`` names the subscription in logs.
    """
    lost = False
    while True:
        pubsub = redis.pubsub()
        watched = None
        try:
            await pubsub.subscribe(channel)
            await on_subscribed(lost)
            if lost:
                log.info("resubscribed to %s", what)
                lost = False
            if on_reconnect is not None:
                watched = pubsub.connection
                if watched is not None:
                    watched.register_connect_callback(on_reconnect)
            subscribed.set()
            while True:
                stop_if_cancelled()  # a cancel an await above swallowed (app.background)
                message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                   timeout=POLL_S)
                if message is not None and message.get("type") == "message":
                    try:
                        on_message(message["data"])
                    except Exception:  # a defect of the handler's: the next message still counts
                        log.exception("handling a message on %s failed", what)
        except (RedisError, OSError) as exc:
            if not lost:
                log.warning("lost the subscription to %s on Redis (retrying every %.1f s): %s",
                            what, RECONNECT_S, exc)
            lost = True
            subscribed.clear()
        finally:
            if watched is not None and on_reconnect is not None:
                watched.deregister_connect_callback(on_reconnect)
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # redis-py < 8.2 lacks hints
        await pause(RECONNECT_S)
