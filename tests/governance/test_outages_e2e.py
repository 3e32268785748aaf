"""Gateway processes through a hung Postgres: a key the gateway cannot check is a prompt 503
while cached keys go on."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.calllog.freeze_proxy import FreezeProxy
from tests.calllog.servers import PrivatePostgres, PrivateRedis
from tests.governance.conftest import HI, Fleet, create_key

NOT_A_MINUTE_S = 15.0
"""Far above the gateway's 3 s key lookup bound, far below the 62 s a lookup took without it."""


def _post(url: str, key: str) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", timeout=60,
                      headers={"Authorization": f"Bearer {key}"},
                      json={"model": "chat", "messages": HI, "max_tokens": 5})


@pytest.fixture
def proxy(postgres: PrivatePostgres) -> Iterator[FreezeProxy]:
    """A proxy to the module's Postgres the test may freeze: a database that hangs."""
    frozen = FreezeProxy(postgres.port)
    yield frozen
    frozen.close()


def test_a_hung_database_answers_an_uncached_key_503_within_seconds(
        fleet_factory: Any, redis_server: PrivateRedis, postgres: PrivatePostgres,
        proxy: FreezeProxy) -> None:
    """Postgres hung: a cached key is answered 200 as before, and a key not cached 503
    ``keys_unavailable`` within the lookup bound, not after the engine's minute."""
    fleet: Fleet = fleet_factory(redis_server.url)
    fleet.env["SWITCHBOARD_DATABASE_URL"] = proxy.url(postgres.url)
    url = fleet.start()[0]
    cached, uncached = create_key(fleet)["key"], create_key(fleet)["key"]
    assert _post(url, cached).status_code == 200
    proxy.freeze()
    try:
        started = time.monotonic()
        answer = _post(url, uncached)
        took = time.monotonic() - started
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "keys_unavailable"
        assert took < NOT_A_MINUTE_S, took
        started = time.monotonic()
        assert _post(url, cached).status_code == 200
        assert time.monotonic() - started < 5
    finally:
        proxy.thaw()
        fleet.stop()  # before the proxy closes: none of its connections is left behind
