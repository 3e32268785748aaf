"""Budgets of callers that get admission credits, through the openai SDK and gateway processes
sharing Redis: a sequential client of a budget-only key or team stops at the budget (at most
the call in flight when it ran out over it), on one gateway or alternating between two, and a
key moved to another team keeps what it spent."""

from __future__ import annotations

from typing import Any

import openai
import pytest

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
