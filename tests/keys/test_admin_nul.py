"""A NUL character in a team id sent to ``/admin/keys`` (body or query) is a 400 naming
``team_id``, and one in a path's key or team id a 404 as any unknown id: never the database's
refusal naming no field (Postgres text holds no NUL), on SQLite and Postgres alike."""

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


async def test_a_nul_in_a_path_id_is_an_unknown_id(admin: httpx.AsyncClient) -> None:
    """A key or team id holding a NUL names nothing: 404 ``key_not_found`` /
    ``team_not_found`` naming the id's field, on every route that takes one."""
    for method, path, code in (("GET", "/admin/keys/key%00", "key_not_found"),
                               ("PATCH", "/admin/keys/key%00", "key_not_found"),
                               ("POST", "/admin/keys/key%00/rotate", "key_not_found"),
                               ("POST", "/admin/keys/key%00/revoke", "key_not_found"),
                               ("DELETE", "/admin/keys/%00", "key_not_found"),
                               ("GET", "/admin/teams/%00", "team_not_found"),
                               ("PATCH", "/admin/teams/team%00", "team_not_found"),
                               ("DELETE", "/admin/teams/team%00", "team_not_found")):
        answer = await admin.request(method, path, json={} if method == "PATCH" else None)
        assert answer.status_code == 404, (method, path, answer.text)
        error = answer.json()["error"]
        assert (error["code"], error["param"]) == (code, code.split("_")[0] + "_id"), error


async def test_a_nul_path_id_needs_an_admin_first() -> None:
    """The 404 for a NUL id comes after the admin check: no key, 401."""
    async with client_of(keys_app(None), key=None) as anonymous:
        assert (await anonymous.get("/admin/keys/key%00")).status_code == 401
        assert (await anonymous.delete("/admin/teams/%00")).status_code == 401
