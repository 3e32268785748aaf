"""What an admin key may do on the admin API, through a running gateway: all of it but grant or
change admin power, which only the master key may (a short-lived admin key could otherwise mint
a permanent one)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.calllog.servers import PrivateRedis
from tests.governance.conftest import Fleet, create_key


def _refused(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "permission_error", "admin_requires_master_key", "admin")
    assert "master key" in error["message"]


def test_only_the_master_key_grants_or_changes_admin_power(fleet_factory: Any,
                                                           redis_server: PrivateRedis) -> None:
    fleet: Fleet = fleet_factory(redis_server.url)
    (url,) = fleet.start(1)
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with fleet.admin() as master:
        team = master.post("/admin/teams", json={"name": "ops", "rpm": 50}).json()
    boss = create_key(fleet, admin=True, rpm=50, expires_at=soon, team_id=team["id"])
    other_admin = create_key(fleet, admin=True)
    plain = create_key(fleet)
    with httpx.Client(base_url=url, timeout=30,
                      headers={"Authorization": f"Bearer {boss['key']}"}) as admin:
        # No new admin key, no key made admin.
        _refused(admin.post("/admin/keys", json={"name": "forever", "admin": True}))
        _refused(admin.patch(f"/admin/keys/{plain['id']}", json={"admin": True}))
        # No change to an admin key, its own included (no un-expiring, no lifted limits).
        _refused(admin.patch(f"/admin/keys/{boss['id']}", json={"expires_at": None}))
        _refused(admin.patch(f"/admin/keys/{boss['id']}", json={"rpm": None}))
        _refused(admin.patch(f"/admin/keys/{other_admin['id']}", json={"name": "x"}))
        _refused(admin.post(f"/admin/keys/{other_admin['id']}/rotate"))
        _refused(admin.post(f"/admin/keys/{other_admin['id']}/revoke"))
        _refused(admin.delete(f"/admin/keys/{other_admin['id']}"))
        # Nor to a team that holds one (its limits bound the admin key).
        _refused(admin.patch(f"/admin/teams/{team['id']}", json={"rpm": None}))
        # Everything else as before.
        made = admin.post("/admin/keys", json={"name": "worker", "admin": False, "rpm": 5})
        assert made.status_code == 201 and made.json()["admin"] is False
        changed = admin.patch(f"/admin/keys/{plain['id']}", json={"rpm": 7, "admin": False})
        assert changed.status_code == 200 and changed.json()["rpm"] == 7
        assert admin.post(f"/admin/keys/{plain['id']}/rotate").status_code == 200
        assert admin.get(f"/admin/keys/{other_admin['id']}").status_code == 200
        assert admin.patch(f"/admin/keys/{'k' * 20}", json={"rpm": 1}).status_code == 404
        # It may give up its own power.
        assert admin.post(f"/admin/keys/{boss['id']}/revoke").status_code == 200
        assert admin.get("/admin/keys").status_code == 401
    with fleet.admin() as master:  # the master key may do all of it
        promoted = master.patch(f"/admin/keys/{plain['id']}", json={"admin": True})
        assert promoted.status_code == 200 and promoted.json()["admin"] is True
        assert master.patch(f"/admin/teams/{team['id']}", json={"rpm": None}).status_code == 200
        assert master.post(f"/admin/keys/{other_admin['id']}/revoke").status_code == 200
        assert master.post("/admin/keys", json={"name": "a2", "admin": True}).status_code == 201
