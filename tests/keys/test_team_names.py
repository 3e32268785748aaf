"""Team names through ``/admin/teams`` and ``KeyStore`` on SQLite and Postgres: unique ignoring
case (409 ``team_exists``, also for creates racing on two gateways), no whitespace around them
(400 naming ``name``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app import errors
from app.db.engine import make_engine
from app.keys import KeyCreate, KeyDirectory, KeyStore, TeamCreate
from tests.keys.test_admin_keys import client_of, keys_app


@pytest.fixture
async def admin(empty_keys_engine: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(keys_app(KeyDirectory(KeyStore(empty_keys_engine), None))) as client:
        yield client


async def test_a_name_differing_only_in_case_is_taken(admin: httpx.AsyncClient) -> None:
    """``SEARCH`` beside ``search`` is 409 ``team_exists`` naming the team it clashes with, on
    create and on rename; a team may change the case of its own name."""
    search = await admin.post("/admin/teams", json={"name": "search"})
    assert search.status_code == 201
    taken = await admin.post("/admin/teams", json={"name": "SEARCH"})
    assert taken.status_code == 409, taken.text
    error = taken.json()["error"]
    assert (error["code"], error["param"]) == ("team_exists", "name")
    assert "'search'" in error["message"] and "ignoring case" in error["message"]
    other = (await admin.post("/admin/teams", json={"name": "ads"})).json()
    renamed = await admin.patch(f"/admin/teams/{other['id']}", json={"name": "Search"})
    assert renamed.status_code == 409 and renamed.json()["error"]["code"] == "team_exists"
    own = await admin.patch(f"/admin/teams/{search.json()['id']}", json={"name": "Search"})
    assert own.status_code == 200 and own.json()["name"] == "Search"
    same = await admin.post("/admin/teams", json={"name": "Search"})
    assert same.status_code == 409
    assert same.json()["error"]["message"] == "A team named 'Search' exists already."
    listed = (await admin.get("/admin/teams")).json()["data"]
    assert sorted(team["name"] for team in listed) == ["Search", "ads"]


@pytest.mark.parametrize("name", ["search ", " search", "search\u00a0", "\u3000search"])
async def test_whitespace_around_a_name_is_400(admin: httpx.AsyncClient, name: str) -> None:
    """A name starting or ending with whitespace is an OpenAI-shaped 400 naming ``name``, on
    create and on rename; whitespace inside a name is fine."""
    team = (await admin.post("/admin/teams", json={"name": "web search"})).json()
    assert team["name"] == "web search"
    for method, path in (("POST", "/admin/teams"), ("PATCH", f"/admin/teams/{team['id']}")):
        response = await admin.request(method, path, json={"name": name})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["param"], error["type"]) == ("name", "invalid_request_error")
        assert error["message"] == (
            "Invalid value for 'name': may not start or end with whitespace.")


@pytest.mark.parametrize(("name", "says"), [
    ("evil\u202eliam", "may not contain control, invisible or text-direction characters"),
    ("line\u2028break", "may not contain control, invisible or text-direction characters"),
    ("para\u2029graph", "may not contain control, invisible or text-direction characters"),
    ("\u200b", "may not contain control, invisible or text-direction characters"),
    ("zero\u2066width", "may not contain control, invisible or text-direction characters"),
    ("\ufeffbom", "may not contain control, invisible or text-direction characters"),
    ("c1\u0085", "may not contain control, invisible or text-direction characters"),
    ("tab\tx", "may not contain control, invisible or text-direction characters"),
    ("   ", "may not be blank (only whitespace)"),
    (" k3 ", "may not start or end with whitespace"),
    ("\u00a0nbsp\u00a0", "may not start or end with whitespace"),
], ids=["rlo", "line-sep", "para-sep", "zwsp", "lri", "bom", "nel", "tab", "blank", "padded",
        "nbsp"])
async def test_invisible_bidi_and_blank_names_are_400(admin: httpx.AsyncClient, name: str,
                                                     says: str) -> None:
    """Key and team names are held to one rule: no control, format (zero-width, bidi) or
    separator character, which would forge or hide lines in a listing, and not blank or
    padded with whitespace; on create and on rename, a 400 naming ``name``."""
    team = (await admin.post("/admin/teams", json={"name": "plain team"})).json()
    key = (await admin.post("/admin/keys", json={"name": "plain key"})).json()
    for method, path in (("POST", "/admin/teams"), ("PATCH", f"/admin/teams/{team['id']}"),
                         ("POST", "/admin/keys"), ("PATCH", f"/admin/keys/{key['id']}")):
        response = await admin.request(method, path, json={"name": name})
        assert response.status_code == 400, (method, path, response.text)
        error = response.json()["error"]
        assert error["param"] == "name" and says in error["message"]
    accepted = await admin.post("/admin/keys", json={"name": "caf\u00e9 \u6f22\u5b57 bot"})
    assert accepted.status_code == 201, accepted.text  # visible non-ASCII is fine


async def test_key_names_need_not_be_unique(admin: httpx.AsyncClient) -> None:
    """Keys are known by id: two keys may share a name, in any case."""
    for name in ("bot", "bot", "BOT"):
        assert (await admin.post("/admin/keys", json={"name": name})).status_code == 201


async def test_concurrent_creates_on_two_gateways_make_one_team(
        empty_keys_engine: AsyncEngine, database_url: str) -> None:
    """Two gateways (two engines) creating the same name in different cases at once: the
    database's index lets exactly one through; the others are 409 ``team_exists``."""
    other = make_engine(database_url)
    try:
        stores = [KeyStore(empty_keys_engine), KeyStore(other)]
        names = ["Billing", "billing", "BILLING", "BiLLiNG"] * 2
        results = await asyncio.gather(
            *(stores[i % 2].create_team(TeamCreate(name=name)) for i, name in enumerate(names)),
            return_exceptions=True)
    finally:
        await other.dispose()
    made = [result for result in results if not isinstance(result, BaseException)]
    refused = [result for result in results if isinstance(result, BaseException)]
    assert len(made) == 1, results
    assert all(isinstance(r, errors.GatewayError) and r.code == "team_exists"
               for r in refused), refused
    store = KeyStore(empty_keys_engine)
    assert [team.name for team in await store.list_teams()] == [made[0].name]
    key, _ = await store.create_key(KeyCreate(name="k", team_id=made[0].id))
    assert key.team_id == made[0].id
