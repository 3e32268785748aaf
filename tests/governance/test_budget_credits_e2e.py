"""Budgets of callers that get admission credits, through the openai SDK and gateway processes
sharing Redis: a sequential client of a budget-only key or team stops at the budget (at most
the call in flight when it ran out over it), on one gateway or alternating between two, a
key moved to another team keeps what it spent, and a budget lowered below what a credit's
tally holds refuses the next call on every gateway."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import openai
import pytest
import redis

from app.limits.model import period_name, spent_nano_usd
from app.limits.redis import PREFIX, spend_key
from tests.calllog.servers import PrivateRedis
from tests.governance.conftest import HI, Fleet, create_key, sdk

BUDGET = 0.1  # a few calls at $0.001 a token


def sequential(urls: list[str], key: str, calls: int) -> list[float]:
    """``calls`` calls one after the other, going round ``urls``; the cost of each admitted one
    (a budget refusal after the first refusal is asserted, never another admission)."""
    costs: list[float] = []
    refused = False
    clients = [sdk(url, key) for url in urls]  # one connection each: calls a few ms apart
    for i in range(calls):
        client = clients[i % len(clients)]
        try:
            answer = client.chat.completions.with_raw_response.create(
                model="chat", messages=HI, max_tokens=5)
        except openai.RateLimitError as exc:
            assert exc.code == "insufficient_quota"
            refused = True
            continue
        assert not refused, "admitted after a budget refusal"
        costs.append(float(answer.headers["x-switchboard-cost-usd"]))
    assert refused, f"the budget never refused (spent {sum(costs)})"
    return costs


@pytest.mark.parametrize("gateways", [1, 2])
def test_a_sequential_client_stops_at_a_budget_only_key_or_team(
        fleet_factory: Any, redis_server: PrivateRedis, gateways: int) -> None:
    """A key with a budget and no RPM (and a team's key, the team with only a budget) gets
    admission credits; its calls, one at a time, are refused once spend reaches the budget:
    every call but the last was admitted while spend was under it."""
    fleet: Fleet = fleet_factory(redis_server.url)
    urls = fleet.start(gateways)
    with fleet.admin() as admin:
        team = admin.post("/admin/teams", json={"name": f"only-budget-{gateways}",
                                                "budget_usd": BUDGET,
                                                "budget_period": "total"}).json()
    for fields in ({"budget_usd": BUDGET, "budget_period": "total"}, {"team_id": team["id"]}):
        costs = sequential(urls, create_key(fleet, **fields)["key"], 40)
        print(f"{fields}: {len(costs)} calls spent ${sum(costs):.4f} of ${BUDGET}")
        assert sum(costs[:-1]) < BUDGET <= sum(costs)


def test_a_key_moved_to_another_team_keeps_its_spent_budget(
        fleet_factory: Any, redis_server: PrivateRedis) -> None:
    """A key's day budget is spent in team a; moved to team b, out of any team, and back
    into a team, it is still refused."""
    fleet: Fleet = fleet_factory(redis_server.url)
    url = fleet.start()[0]
    with fleet.admin() as admin:
        a, b = (admin.post("/admin/teams", json={"name": f"move-{name}"}).json()["id"]
                for name in ("a", "b"))
    created = create_key(fleet, team_id=a, rpm=100, budget_usd=BUDGET, budget_period="day")
    sequential([url], created["key"], 40)
    for team in (b, None, a):
        with fleet.admin() as admin:
            moved = admin.patch(f"/admin/keys/{created['id']}", json={"team_id": team})
        assert moved.status_code == 200, moved.text
        with pytest.raises(openai.RateLimitError) as caught:
            sdk(url, created["key"]).chat.completions.create(model="chat", messages=HI)
        assert caught.value.code == "insufficient_quota"


def test_a_lowered_budget_counts_the_spend_a_credit_tally_held(
        fleet_factory: Any, redis_server: PrivateRedis) -> None:
    """A key with a $100 day budget makes three calls on gateway a: the first is counted in
    Redis, the other two wait in its credit's tally there. Its budget is cut, on gateway b, to
    between the two: a settles the tally on hearing of the change (it sees no further call of
    the key), and the key's next call is refused on both gateways."""
    fleet: Fleet = fleet_factory(redis_server.url)
    a, b = fleet.start(2)
    created = create_key(fleet, budget_usd=100, budget_period="day")
    client = sdk(a, created["key"])
    costs = [float(client.chat.completions.with_raw_response.create(
        model="chat", messages=HI, max_tokens=5).headers["x-switchboard-cost-usd"])
        for _ in range(3)]
    spent = sum(spent_nano_usd(cost) for cost in costs)
    counter = spend_key(PREFIX, tag=created["id"], scope="key", id=created["id"],
                        period=period_name("day", datetime.now(UTC)))
    store = redis.Redis(port=redis_server.port)
    try:
        first = spent_nano_usd(costs[0])
        assert counted(store, counter, lambda n: n == first) == first  # the tally holds two
        with fleet.admin(b) as admin:
            lowered = admin.patch(f"/admin/keys/{created['id']}",
                                  json={"budget_usd": (first + spent) / 2 / 1e9})
        assert lowered.status_code == 200, lowered.text
        assert counted(store, counter, lambda n: n == spent) == spent
    finally:
        store.close()
    for url in (a, b):
        with pytest.raises(openai.RateLimitError) as caught:
            sdk(url, created["key"]).chat.completions.create(model="chat", messages=HI)
        assert caught.value.code == "insufficient_quota"


def counted(store: redis.Redis, counter: str, done: Any) -> int:
    """The spend counter once ``done`` holds for it (or after 5 s, well inside a credit's
    life: its tally is not settled by its end)."""
    deadline = time.monotonic() + 5
    while True:
        value = int(store.get(counter) or 0)
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.02)
