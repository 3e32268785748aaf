"""A NUL character in a team id sent to ``/admin/keys`` (body or query) is a 400 naming
``team_id``, and one in a path's key or team id a 400 naming ``key_id``/``team_id``: never the
database's refusal naming no field (Postgres text holds no NUL), on SQLite and Postgres alike."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import delete

from app.db.engine import make_engine
from app.db.migrate import upgrade
from app.db.models import ApiKey, Team
from app.keys import KeyDirectory, KeyStore
from tests.keys.test_admin_keys import client_of, keys_app


@pytest.fixture
async def admin(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The key admin API (no Redis) over a migrated database with no keys or teams."""
    await upgrade(database_url)
    engine = make_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(delete(ApiKey))
        await conn.execute(delete(Team))
    async with client_of(keys_app(KeyDirectory(KeyStore(engine), None))) as client:
        yield client
    await engine.dispose()


async def test_a_nul_in_team_id_is_a_400_naming_it(admin: httpx.AsyncClient) -> None:
    """``team_id`` with a NUL in a created key, a key's update, or ``GET /admin/keys?team_id=``:
    400 ``param: team_id``, its message naming the field."""
    key = (await admin.post("/admin/keys", json={"name": "k"})).json()
    for answer in (await admin.post("/admin/keys", json={"name": "x", "team_id": "t\x00"}),
                   await admin.patch(f"/admin/keys/{key['id']}", json={"team_id": "t\x00"}),
                   await admin.get("/admin/keys", params={"team_id": "t\x00"})):
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["param"] == "team_id", error
        assert "'team_id'" in error["message"] and "NUL" in error["message"], error
        assert error["type"] == "invalid_request_error"
    assert (await admin.get(f"/admin/keys/{key['id']}")).json()["team_id"] is None


async def test_a_nul_in_a_path_id_is_a_400_naming_it(admin: httpx.AsyncClient) -> None:
    """A key or team id holding a NUL is a 400 ``invalid_value`` naming the id's field, on every
    route that takes one, as a call id's is (was a 404 echoing the id with the NUL dropped:
    "No team with id 'ab'" for ``a%00b``)."""
    for method, path, param in (("GET", "/admin/keys/key%00", "key_id"),
                                ("PATCH", "/admin/keys/key%00", "key_id"),
                                ("POST", "/admin/keys/key%00/rotate", "key_id"),
                                ("POST", "/admin/keys/key%00/revoke", "key_id"),
                                ("DELETE", "/admin/keys/%00", "key_id"),
                                ("GET", "/admin/teams/a%00b", "team_id"),
                                ("PATCH", "/admin/teams/team%00", "team_id"),
                                ("DELETE", "/admin/teams/team%00", "team_id")):
        answer = await admin.request(method, path, json={} if method == "PATCH" else None)
        assert answer.status_code == 400, (method, path, answer.text)
        error = answer.json()["error"]
        assert (error["code"], error["param"]) == ("invalid_value", param), error
        assert error["message"] == f"Invalid value for '{param}': it contains a NUL character."


async def test_a_nul_path_id_needs_an_admin_first() -> None:
    """The 400 for a NUL id comes after the admin check: no key, 401."""
    async with client_of(keys_app(None), key=None) as anonymous:
        assert (await anonymous.get("/admin/keys/key%00")).status_code == 401
        assert (await anonymous.delete("/admin/teams/%00")).status_code == 401
