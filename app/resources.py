"""What a running gateway process holds for its lifetime, typed: built in the app's lifespan
(``app.main``), read by the routes through ``resources_of``.

Redis: one URL (``SWITCHBOARD_REDIS_URL``), two clients (``RedisPools``): the call log's redis-py
pool (spool, live feed, key-change messages, budget reconciles), whose commands may wait seconds
for a big replay, and the limiter's own pipelined connection (``app.limits.resp``), whose
admissions wait at most ``rate_limits.redis_timeout_ms``, so a spool replay never starves an
admission.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from sqlalchemy.ext.asyncio import AsyncEngine

from app.limits.resp import RespClient
from app.limits.sentinel import SentinelRespClient
from app.sentinel_url import SentinelUrl, is_sentinel
from app.settings import Settings

if TYPE_CHECKING:
    from app.calllog.runtime import CallLogRuntime
    from app.gateway import Gateway
    from app.keys import KeyDirectory
    from app.limits import Limiter
    from app.metrics.runtime import MetricsRuntime
    from app.prompts.library import PromptLibrary
    from app.reload import ConfigReloader
    from app.stages.authenticate import Authenticate


@dataclass(slots=True)
class RedisPools:
    """One Redis configuration, two clients (see the module docstring)."""

    calllog: aioredis.Redis
    limiter: RespClient
    sentinel: Sentinel | None = None
    """redis-py's sentinel manager behind ``calllog`` (a Sentinel URL): its own clients of the
    sentinels are closed with the pools."""

    @classmethod
    def open(cls, url: str) -> RedisPools:
        # Both fail fast when Redis is down: callers fall back (spool, fail mode), never stall.
        # The limiter waits for an answer only milliseconds (``rate_limits.redis_timeout_ms``,
        # its own timer); its client's reply timeout is the backstop of a round trip left to
        # finish.
        if is_sentinel(url):
            return cls._open_sentinel(SentinelUrl.parse(url))
        calllog = aioredis.from_url(url, socket_connect_timeout=1.0, socket_timeout=5.0,
                                    retry=Retry(NoBackoff(), 0), health_check_interval=15)
        limiter = RespClient.from_url(url, connect_timeout_s=1.0, reply_timeout_s=1.0)
        return cls(calllog=calllog, limiter=limiter)

    @classmethod
    def _open_sentinel(cls, url: SentinelUrl) -> RedisPools:
        # The same timeouts as above, for the master; the sentinels get the connect timeout
        # for every command (each answers from memory) and their own login, if any.
        sentinel_kwargs: dict[str, Any] = {
            "socket_connect_timeout": 1.0, "socket_timeout": 1.0,
            "username": url.sentinel_username, "password": url.sentinel_password}
        tls: dict[str, Any] = {}
        if url.tls:
            tls = {"ssl": True, "ssl_cert_reqs": url.ssl_cert_reqs,
                   "ssl_ca_certs": url.ssl_ca_certs}
        sentinel = Sentinel(list(url.sentinels), sentinel_kwargs=sentinel_kwargs)
        calllog: aioredis.Redis = sentinel.master_for(
            url.master, redis_class=aioredis.Redis, db=url.db, username=url.username,
            password=url.password, socket_connect_timeout=1.0, socket_timeout=5.0,
            retry=Retry(NoBackoff(), 0), health_check_interval=15, **tls)
        limiter = SentinelRespClient(url, connect_timeout_s=1.0, reply_timeout_s=1.0)
        return cls(calllog=calllog, limiter=limiter, sentinel=sentinel)

    async def aclose(self) -> None:
        await self.limiter.aclose()
        await self.calllog.aclose()
        if self.sentinel is not None:
            for client in self.sentinel.sentinels:
                await client.aclose()


@dataclass(slots=True)
class Resources:
    settings: Settings
    gateway: Gateway
    authenticator: Authenticate
    limiter: Limiter | None = None
    redis: RedisPools | None = None
    calllog: CallLogRuntime | None = None
    engine: AsyncEngine | None = None
    """The call log's database (the admin API reads it); ``None`` with the call log off."""
    metrics: MetricsRuntime | None = None
    keys: KeyDirectory | None = None
    """The virtual-key directory; ``None`` when the call log (its database) is off."""
    reloader: ConfigReloader | None = None
    """Live config reloads; ``None`` on the embedded default or a config given in code."""
    prompts: PromptLibrary | None = None
    """Prompt templates (``app.prompts``); ``None`` when the call log (its database) is off."""
    ready: bool = False
    """Started and not draining (``/readyz``)."""


class NotStarted(RuntimeError):
    """The app's lifespan has not built its resources (it was served without it)."""


def resources_of(holder: Request | FastAPI) -> Resources:
    """The resources of the app serving ``holder`` (a request, or the app itself)."""
    app = holder.app if isinstance(holder, Request) else holder
    resources = getattr(app.state, "resources", None)
    if not isinstance(resources, Resources):
        raise NotStarted("the app's lifespan has not run: serve it with its lifespan on")
    return resources
