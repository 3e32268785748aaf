"""Gateway processes through a hung Postgres and a Redis restarted empty: a key the gateway cannot
check is a prompt 503 while cached keys go on, and a spent budget stays spent after Redis lost
its counters (rebuilt from the call log as soon as Redis is back, not a reconcile interval
later)."""

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
"""Far above the gateway's bounds (a 3 s key lookup; a reconcile as soon as Redis is back) and
far below what the defects cost (62 s for the lookup; up to a 60 s reconcile interval)."""


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
        assert answer.headers["retry-after"] == "2"  # DOWN_FOR_S: sooner fails at once again
        assert took < NOT_A_MINUTE_S, took
        started = time.monotonic()
        assert _post(url, cached).status_code == 200
        assert time.monotonic() - started < 5
    finally:
        proxy.thaw()
        fleet.stop()  # before the proxy closes: none of its connections is left behind


def test_a_spent_budget_stays_spent_after_redis_restarts_empty(
        fleet_factory: Any, redis_server: PrivateRedis) -> None:
    """A key's daily budget is spent; Redis restarts and loses every counter. The gateways
    rebuild the counters from the call log as soon as Redis answers again: within seconds the
    key is refused again on both of them, having been granted a few calls meanwhile, not the
    whole budget again (nor for the 60 s reconcile interval)."""
    fleet: Fleet = fleet_factory(redis_server.url)
    urls = fleet.start(2)
    created = create_key(fleet, budget_usd=0.25, budget_period="day")  # ~25 calls
    key = created["key"]
    admitted = 0
    for i in range(100):
        answer = _post(urls[i % 2], key)
        if answer.status_code == 429:
            assert answer.json()["error"]["code"] == "insufficient_quota"
            break
        assert answer.status_code == 200, answer.text
        admitted += 1
    else:
        pytest.fail("the budget never refused")
    # Every admitted call is in the call log (what the reconcile rebuilds from).
    deadline = time.monotonic() + 15
    with fleet.admin() as admin:
        while sum(r["http_status"] == 200 for r in admin.get(
                "/admin/calls", params={"key_id": created["id"]}).json()["data"]) < admitted:
            assert time.monotonic() < deadline, "the calls never reached the log"
            time.sleep(0.1)
    redis_server.stop()
    redis_server.start()  # same port, empty
    restarted = time.monotonic()
    refused_by: set[str] = set()
    granted_again = 0
    while refused_by != set(urls):
        assert time.monotonic() - restarted < NOT_A_MINUTE_S, (
            f"still granted {granted_again} calls after the restart, refused by {refused_by}")
        for url in urls:
            answer = _post(url, key)
            if answer.status_code == 429:
                assert answer.json()["error"]["code"] == "insufficient_quota"
                refused_by.add(url)
            elif answer.status_code == 200:
                granted_again += 1
            else:  # Redis not back yet on that gateway: fail-closed for budgets
                assert answer.json()["error"]["code"] == "limiter_unavailable", answer.text
        time.sleep(0.1)
    print(f"budget $0.25: {admitted} calls before the restart, {granted_again} after it, "
          f"refused on both gateways {time.monotonic() - restarted:.1f} s after it")
    assert granted_again <= admitted // 2, (granted_again, admitted)
    assert "budgets reconciled from the call log" in fleet.logs()
