"""A budget set on a key or team that already spent in its period, through gateway processes
and the openai SDK, with Redis (two gateways) and without (the in-process limiter): the
key's next call is refused (the spend so far counted), whether the budget is new, its period
changed, or it is the team's; with Redis, whether the change came through the admin API or
the CLI. (The new period's counter started at 0, and the key spent the new budget again.)"""

from __future__ import annotations

import subprocess
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import openai
import pytest
import redis

from app.limits.model import period_name
from app.limits.redis import PREFIX, spend_key
from tests.calllog.servers import SWITCHBOARD, PrivatePostgres, PrivateRedis
from tests.governance.conftest import HI, Fleet, create_key, sdk

CALLS = 4
"""Calls made before the budget is set (about $0.01 each)."""


def spend(url: str, key: str, calls: int) -> None:
    """``calls`` calls of ``key`` at ``url``, each admitted."""
    client = sdk(url, key)
    for _ in range(calls):
        client.chat.completions.create(model="chat", messages=HI, max_tokens=5)


def logged(fleet: Fleet, calls: int, **group: str) -> float:
    """The cost of a key's or team's calls (``key_id=`` or ``team_id=``) once ``/admin/spend``
    (the call log) has at least ``calls`` of them."""
    by = "key" if "key_id" in group else "team"
    deadline = time.monotonic() + 15
    with fleet.admin() as admin:
        while True:
            rows = admin.get("/admin/spend", params={"by": by, **group}).json()["data"]
            if rows and rows[0]["requests"] >= calls:
                return float(rows[0]["cost_usd"])
            assert time.monotonic() < deadline, f"the call log has {rows}"
            time.sleep(0.1)


def refused(url: str, key: str) -> None:
    """The key's next call at ``url`` is refused: its budget is spent."""
    with pytest.raises(openai.RateLimitError) as caught:
        sdk(url, key).chat.completions.create(model="chat", messages=HI, max_tokens=5)
    assert caught.value.code == "insufficient_quota"


def refused_soon(url: str, key: str) -> None:
    """``refused`` once ``url`` has heard of the change (over Redis: within a second)."""
    deadline = time.monotonic() + 2
    while True:
        try:
            refused(url, key)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def patch(fleet: Fleet, url: str, path: str, body: dict[str, Any]) -> None:
    with fleet.admin(url) as admin:
        changed = admin.patch(path, json=body)
    assert changed.status_code == 200, changed.text


@pytest.mark.parametrize("change", ["key_budget", "key_period", "team_budget"])
@pytest.mark.parametrize("limiter", ["redis", "local"])
def test_a_budget_set_after_spending_counts_what_was_spent(
        fleet_factory: Any, redis_server: PrivateRedis, limiter: str, change: str) -> None:
    """The report's sequence: a key with no budget spends, its budget is set to half what it
    spent, and its next call is refused; the same for a key whose $100 day budget becomes a
    month one, and for a team given a budget. With Redis the calls go to one gateway and the
    change and the next call to the other."""
    fleet: Fleet = fleet_factory(redis_server.url if limiter == "redis" else "")
    urls = fleet.start(2 if limiter == "redis" else 1)
    spender, changer = urls[0], urls[-1]
    team_id = None
    if change == "team_budget":
        with fleet.admin() as admin:
            team_id = admin.post("/admin/teams",
                                 json={"name": f"t-{uuid.uuid4().hex[:8]}"}).json()["id"]
    created = create_key(fleet, **({"team_id": team_id} if team_id is not None
                                   else {"budget_usd": 100, "budget_period": "day"}
                                   if change == "key_period" else {}))
    spend(spender, created["key"], CALLS)
    group = {"team_id": team_id} if team_id is not None else {"key_id": created["id"]}
    spent = logged(fleet, CALLS, **group)
    path = f"/admin/teams/{team_id}" if team_id is not None else f"/admin/keys/{created['id']}"
    patch(fleet, changer, path, {"budget_usd": spent / 2,
                                 **({"budget_period": "month"} if change == "key_period"
                                    else {})})
    refused(changer, created["key"])
    refused_soon(spender, created["key"])  # the gateway that made the calls, once it heard
    assert logged(fleet, CALLS, **group) == pytest.approx(spent)  # refusals cost nothing


def test_a_budget_set_with_the_cli_counts_what_was_spent(
        fleet_factory: Any, redis_server: PrivateRedis, postgres: PrivatePostgres) -> None:
    """``switchboard keys update --budget-usd`` and ``switchboard teams update --budget-usd``
    raise the spend counters in Redis before they publish the change: the key's next call, on
    either gateway, is refused."""
    fleet: Fleet = fleet_factory(redis_server.url)
    urls = fleet.start(2)
    with fleet.admin() as admin:
        team = admin.post("/admin/teams", json={"name": f"t-{uuid.uuid4().hex[:8]}"}).json()
    new, member = create_key(fleet), create_key(fleet, team_id=team["id"])
    spend(urls[0], new["key"], CALLS)
    spend(urls[0], member["key"], CALLS)
    key_budget = logged(fleet, CALLS, key_id=new["id"]) / 2
    team_budget = logged(fleet, CALLS, team_id=team["id"]) / 2
    env = {**fleet.env, "SWITCHBOARD_DATABASE_URL": postgres.url,
           "SWITCHBOARD_REDIS_URL": redis_server.url}
    for command in (["keys", "update", new["id"], "--budget-usd", f"{key_budget:.6f}"],
                    ["teams", "update", team["id"], "--budget-usd", f"{team_budget:.6f}"]):
        done = subprocess.run([SWITCHBOARD, *command], env=env, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
    month = period_name("month", datetime.now(UTC))
    store = redis.Redis.from_url(redis_server.url)
    try:
        for scope, id, budget in (("key", new["id"], key_budget),
                                  ("team", team["id"], team_budget)):
            counter = spend_key(PREFIX, tag=id, scope=scope, id=id, period=month)
            assert int(store.get(counter) or 0) >= budget * 2 * 1e9 - 1
    finally:
        store.close()
    for url in urls:
        for key in (new, member):
            refused_soon(url, key["key"])
