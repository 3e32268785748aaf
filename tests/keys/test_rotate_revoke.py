"""A rotation racing a revocation of the same key, through ``/admin/keys`` and ``KeyStore`` on
SQLite and Postgres: a rotation answered with a new secret always came before the revocation.

The invariant, per key, with a rotate and a revoke sent at once (the revoke always succeeds):

- either the rotation came first: 200 with a new secret, its answer shows the key active, the
  revocation's answer shows the rotated prefix (it revoked the rotated key), and the new secret
  is refused 401 as a *revoked* key (it was the key's secret when the key was revoked), the old
  one as an unknown key;
- or the revocation came first: the rotate is 409 ``key_revoked`` and the original secret is
  refused 401 as a revoked key.

Never a 200 rotate whose answer shows the key revoked, or whose secret the revocation did not
see: a secret that looks as if it worked and never does.
"""

from __future__ import annotations

import asyncio

import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from app import errors
from app.keys import KeyCreate, KeyDirectory, KeyStore, hash_key
from tests.keys.test_admin_keys import client_of, keys_app
from tests.keys.test_store import _blocked

ROUNDS = 60

REVOKED = "This API key is revoked."
UNKNOWN = "Incorrect API key provided."


async def refusal(app: FastAPI, key: str) -> str:
    """The 401's message for ``key`` (keys here are admin keys: an accepted one is a 200)."""
    async with client_of(app, key) as client:
        response = await client.get("/admin/keys", params={"limit": 1})
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "invalid_api_key"
    return str(response.json()["error"]["message"])


async def test_a_rotate_racing_a_revoke_never_answers_a_dead_secret(
        empty_keys_engine: AsyncEngine) -> None:
    """``ROUNDS`` keys, each rotated and revoked at once: every outcome is one of the two the
    module's docstring allows."""
    app = keys_app(KeyDirectory(KeyStore(empty_keys_engine), None))
    outcomes = {"rotated first": 0, "revoked first": 0}
    async with client_of(app) as admin:
        for _ in range(ROUNDS):
            created = (await admin.post("/admin/keys", json={"name": "r", "admin": True})).json()
            path = f"/admin/keys/{created['id']}"
            rotate, revoke = await asyncio.gather(admin.post(f"{path}/rotate"),
                                                  admin.post(f"{path}/revoke"))
            assert revoke.status_code == 200 and revoke.json()["status"] == "revoked"
            if rotate.status_code == 200:
                rotated = rotate.json()
                assert rotated["status"] == "active" and rotated["revoked_at"] is None, rotated
                assert revoke.json()["prefix"] == rotated["prefix"], (rotated, revoke.json())
                assert await refusal(app, rotated["key"]) == REVOKED
                assert await refusal(app, created["key"]) == UNKNOWN
                outcomes["rotated first"] += 1
            else:
                assert rotate.status_code == 409, rotate.text
                assert rotate.json()["error"]["code"] == "key_revoked"
                assert await refusal(app, created["key"]) == REVOKED
                outcomes["revoked first"] += 1
    assert sum(outcomes.values()) == ROUNDS, outcomes


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_rotate_waiting_on_a_revoke_is_409(empty_keys_engine: AsyncEngine) -> None:
    """The interleaving that used to go wrong, forced on Postgres: the rotation starts while a
    revocation holds the key's row, uncommitted. It waits for it, then refuses (409
    ``key_revoked``) instead of answering a new secret for the revoked key."""
    store = KeyStore(empty_keys_engine)
    record, key = await store.create_key(KeyCreate(name="r"))
    [rotated] = await _blocked(
        [f"UPDATE api_keys SET revoked_at = now() WHERE id = '{record.id}'"],
        lambda: store.rotate_key(record.id), store.engine)
    assert isinstance(rotated, errors.GatewayError) and rotated.code == "key_revoked", rotated
    assert rotated.status_code == 409
    found = await store.find_by_hash(hash_key(key))
    assert found is not None and found[0].revoked_at is not None  # the old secret, revoked


async def test_rotating_a_deleted_key_is_404(empty_keys_engine: AsyncEngine) -> None:
    """A key gone before its rotation is 404 ``key_not_found``, not 409."""
    store = KeyStore(empty_keys_engine)
    record, _ = await store.create_key(KeyCreate(name="r"))
    await store.delete_key(record.id)
    with pytest.raises(errors.NotFound) as caught:
        await store.rotate_key(record.id)
    assert caught.value.code == "key_not_found"

