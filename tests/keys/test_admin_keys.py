"""``/admin/keys`` and ``/admin/teams`` over the gateway's own authentication, on SQLite and
Postgres: lifecycle, listings a page at a time, input errors naming the field (bodies that are
not JSON objects included), 404s, 409s and 503s."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import delete, update

from app.api import errors as api_errors
from app.api.admin_keys import router
from app.calllog import LogSink
from app.config import embedded_config
from app.db.engine import make_engine
from app.db.migrate import upgrade
from app.db.models import ApiKey, Team
from app.gateway import Gateway
from app.keys import KeyDirectory, KeyStore, hash_key
from app.pricing import PriceBook
from app.resources import Resources
from app.settings import Settings
from app.stages.authenticate import Authenticate
from tests.servers import free_port

MASTER = "sk-admin-test-master-key-0123456789"


def keys_app(directory: KeyDirectory | None) -> FastAPI:
    """The key admin router over an offline gateway's resources, with a master key."""
    settings = Settings(master_key=SecretStr(MASTER))
    resources = Resources(
        settings=settings, authenticator=Authenticate(settings.master_key, directory),
        gateway=Gateway(config=embedded_config({}), providers={}, prices=PriceBook({}),
                        sink=LogSink()), keys=directory)
    app = FastAPI()
    app.state.resources = resources
    api_errors.install(app)
    app.include_router(router)
    return app


def client_of(app: FastAPI, key: str | None = MASTER) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), headers=headers,
                             base_url="http://gateway")


@pytest.fixture
async def directory(database_url: str) -> AsyncIterator[KeyDirectory]:
    """A directory (no Redis) over a migrated database with no keys or teams."""
    await upgrade(database_url)
    engine = make_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(delete(ApiKey))
        await conn.execute(delete(Team))
    yield KeyDirectory(KeyStore(engine), None)
    await engine.dispose()


@pytest.fixture
async def admin(directory: KeyDirectory) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(keys_app(directory)) as client:
        yield client


async def test_key_lifecycle(admin: httpx.AsyncClient, directory: KeyDirectory) -> None:
    """Create (key shown once), get, list by team, update, rotate, revoke, delete."""
    team = (await admin.post("/admin/teams", json={"name": "search", "rpm": 100})).json()
    created = await admin.post("/admin/keys", json={
        "name": "bot", "team_id": team["id"], "models": ["mock-chat"], "rpm": 10,
        "expires_at": "2099-01-01T00:00:00Z", "metadata": {"owner": "ana"}})
    assert created.status_code == 201
    body = created.json()
    key = body.pop("key")
    assert key.startswith("sk-sb-") and "key_hash" not in body
    assert body["prefix"] == key[:10] and body["status"] == "active"
    assert body["expires_at"] == "2099-01-01T00:00:00.000000Z" and body["revoked_at"] is None
    key_id = body["id"]
    fetched = (await admin.get(f"/admin/keys/{key_id}")).json()
    assert fetched == body and "key" not in fetched
    await admin.post("/admin/keys", json={"name": "other"})
    listed = (await admin.get("/admin/keys", params={"team_id": team["id"]})).json()
    assert [k["id"] for k in listed["data"]] == [key_id]
    assert len((await admin.get("/admin/keys")).json()["data"]) == 2
    assert await directory.resolve(key) is not None
    patched = (await admin.patch(f"/admin/keys/{key_id}", json={"rpm": None, "tpm": 5})).json()
    assert patched["rpm"] is None and patched["tpm"] == 5 and patched["models"] == ["mock-chat"]
    assert directory.cached(hash_key(key)) is None  # the change dropped the cached entry
    rotated = (await admin.post(f"/admin/keys/{key_id}/rotate")).json()
    new_key = rotated["key"]
    assert new_key != key and rotated["id"] == key_id and rotated["tpm"] == 5
    assert await directory.resolve(key) is None and await directory.resolve(new_key)
    revoked = (await admin.post(f"/admin/keys/{key_id}/revoke")).json()
    assert revoked["status"] == "revoked" and revoked["revoked_at"] is not None
    again = await admin.post(f"/admin/keys/{key_id}/rotate")
    assert again.status_code == 409 and again.json()["error"] == {
        "message": "This key is revoked; create a new one instead.",
        "type": "invalid_request_error", "param": "key_id", "code": "key_revoked"}
    assert (await admin.delete(f"/admin/keys/{key_id}")).json() == {
        "object": "key", "id": key_id, "deleted": True}
    assert (await admin.get(f"/admin/keys/{key_id}")).status_code == 404


async def test_a_model_the_gateway_does_not_serve_is_kept_with_a_warning(
        admin: httpx.AsyncClient) -> None:
    """A typo in a key's model list ("mock-chta" for "mock-chat") makes the key as asked (a
    model may be configured later), and the answer says which name this gateway does not
    serve; a list of served models, or an update that leaves the list alone, says nothing."""
    made = await admin.post("/admin/keys", json={"name": "typo",
                                                 "models": ["mock-chat", "mock-chta"]})
    assert made.status_code == 201
    body = made.json()
    assert body["models"] == ["mock-chat", "mock-chta"]
    assert body["warnings"] == [
        "models: this gateway does not serve 'mock-chta'; calls to it get 404 until it is "
        "configured (a typo?)"]
    assert "warnings" not in (await admin.get(f"/admin/keys/{body['id']}")).json()
    renamed = await admin.patch(f"/admin/keys/{body['id']}", json={"name": "still-typo"})
    assert renamed.status_code == 200 and "warnings" not in renamed.json()
    fixed = await admin.patch(f"/admin/keys/{body['id']}", json={"models": ["mock-chat"]})
    assert fixed.json()["models"] == ["mock-chat"] and "warnings" not in fixed.json()
    worse = await admin.patch(f"/admin/keys/{body['id']}", json={"models": ["a", "b"]})
    assert worse.json()["warnings"] == [
        "models: this gateway does not serve 'a', 'b'; calls to them get 404 until they are "
        "configured (a typo?)"]
    served = await admin.post("/admin/keys", json={"name": "fine", "models": ["mock-embed"]})
    assert served.status_code == 201 and "warnings" not in served.json()
    twice = await admin.post("/admin/keys", json={"name": "twice",
                                                  "models": ["mock-embed", "mock-chat",
                                                             "mock-embed"]})
    assert twice.json()["models"] == ["mock-embed", "mock-chat"]  # each once, in order


async def test_team_lifecycle(admin: httpx.AsyncClient) -> None:
    """Teams: create, get, list, update, 409 while keys remain, delete."""
    created = await admin.post("/admin/teams", json={"name": "ops", "budget_usd": 50,
                                                      "budget_period": "day"})
    assert created.status_code == 201
    team = created.json()
    assert team["budget_usd"] == 50 and team["created_at"].endswith("Z")
    assert (await admin.get(f"/admin/teams/{team['id']}")).json() == team
    assert [t["name"] for t in (await admin.get("/admin/teams")).json()["data"]] == ["ops"]
    patched = (await admin.patch(f"/admin/teams/{team['id']}", json={"tpm": 9})).json()
    assert patched["tpm"] == 9 and patched["budget_usd"] == 50
    key = (await admin.post("/admin/keys", json={"name": "k", "team_id": team["id"]})).json()
    busy = await admin.delete(f"/admin/teams/{team['id']}")
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "team_not_empty"
    taken = await admin.post("/admin/teams", json={"name": "ops"})
    assert taken.status_code == 409 and taken.json()["error"]["param"] == "name"
    for conflict in (busy, taken):  # the caller's to resolve, as every other 4xx
        assert conflict.json()["error"]["type"] == "invalid_request_error"
    await admin.delete(f"/admin/keys/{key['id']}")
    assert (await admin.delete(f"/admin/teams/{team['id']}")).json()["deleted"] is True


@pytest.mark.parametrize(("body", "param"), [
    ({"name": ""}, "name"),
    ({"name": "x" * 129}, "name"),
    ({"name": "k", "rpm": 0}, "rpm"),
    ({"name": "k", "budget_usd": -1}, "budget_usd"),
    ({"name": "k", "budget_period": "week"}, "budget_period"),
    ({"name": "k", "expires_at": "next tuesday"}, "expires_at"),
    ({"name": "k", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ({"name": "k", "models": [""]}, "models.0"),
    ({"name": "k", "models": []}, "models"),
    ({"name": "k", "metadata": {str(i): "v" for i in range(17)}}, "metadata"),
    ({"name": "k", "colour": "red"}, "colour"),
    ({"name": "k", "privacy": "allow"}, "privacy"),
    ({"name": "k", "privacy": "secret"}, "privacy"),
    ({"name": "k", "expires_at": 1796576000000}, "expires_at"),  # milliseconds
    ({"name": "k", "expires_at": "9999-12-31T23:59:59-05:00"}, "expires_at"),  # year 10000
    ({"name": "k", "budget_usd": 1e10}, "budget_usd"),  # past what the database column holds
    ({"name": "k", "budget_usd": 1e-11}, "budget_usd"),  # would be stored as 0
    ({"name": "evil\nkey_000000000000  sk-sb-FAKE...  active"}, "name"),
    ({"name": "k", "admin": "yes"}, "admin"),  # strict: no admin key from a string
    ({"name": "k", "rpm": "10"}, "rpm"),
    ({"name": "k", "metadata": {"owner": "a\x00b"}}, "metadata.owner"),  # Postgres has no NUL
    ({"name": "k", "models": ["ch\x00at"]}, "models.0"),
])
async def test_bad_key_input_is_400_naming_the_field(
        admin: httpx.AsyncClient, body: dict[str, object], param: str) -> None:
    """Invalid create input is an OpenAI-shaped 400 whose param names the field, and so does
    its message, as the data plane's do."""
    response = await admin.post("/admin/keys", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert error["message"].startswith((f"Invalid value for '{param}': ",
                                        f"Unknown parameter: '{param}'.")), error


NAMED_PROBLEMS: list[tuple[str, dict[str, object], str, str]] = [
    ("limit", {"name": "k", "rpm": 0, "tpm": 0},
     "Invalid value for 'rpm': Input should be greater than or equal to 1.", "rpm"),
    ("missing", {"rpm": 5}, "Missing required parameter: 'name'.", "name"),
    ("unknown", {"name": "k", "colour": "red"}, "Unknown parameter: 'colour'.", "colour"),
    ("empty-key", {"name": "k", "metadata": {"": "v"}},
     "Invalid key \"\" in 'metadata': String should have at least 1 character.", "metadata"),
    ("long-key", {"name": "k", "metadata": {"k" * 65: "v"}},
     f"Invalid key \"{'k' * 40}...\" in 'metadata': String should have at most 64 "
     "characters.", "metadata"),
    ("dotted-key", {"name": "k", "metadata": {"a.b": "\x00"}},
     "Invalid value for 'metadata[\"a.b\"]': may not contain a NUL character.",
     'metadata["a.b"]'),
    ("digit-key", {"name": "k", "metadata": {"0": 1}},
     "Invalid value for 'metadata[\"0\"]': Input should be a valid string.", 'metadata["0"]'),
    ("bracket-key", {"name": "k", "metadata": {"[key]": 1}},
     "Invalid value for 'metadata[\"[key]\"]': Input should be a valid string.",
     'metadata["[key]"]'),
    ("newline-key", {"name": "k", "metadata": {"x\ny": 1}},
     "Invalid value for 'metadata[\"x\\ny\"]': Input should be a valid string.",
     'metadata["x\\ny"]'),
    ("plain-key", {"name": "k", "metadata": {"owner": 1}},
     "Invalid value for 'metadata.owner': Input should be a valid string.", "metadata.owner"),
]
"""A bad field, the message and the param its 400 has: (id, body, message, param)."""


@pytest.mark.parametrize(("method", "path", "sent", "message", "param"), [
    pytest.param(method, path, sent, message, param, id=f"{method}-{path[7:11]}-{name}")
    for method, path in (("POST", "/admin/keys"), ("POST", "/admin/teams"),
                         ("PATCH", "/admin/keys/{key}"), ("PATCH", "/admin/teams/{team}"))
    for name, sent, message, param in NAMED_PROBLEMS
    if not (method == "PATCH" and name == "missing")])  # an update needs no name
async def test_a_400_names_the_field_in_its_message_and_param(
        admin: httpx.AsyncClient, method: str, path: str, sent: dict[str, object],
        message: str, param: str) -> None:
    """The admin API's 400 for a bad field says which in its message, in the data plane's
    words ("Invalid value for 'rpm': ..."), and its param is a path that reads one way: a
    metadata key that is no plain name (empty, dotted, digits, a newline) in JSON-quoted
    brackets, a bad key itself named in the message (cut at 40 characters) under the field."""
    key = (await admin.post("/admin/keys", json={"name": "held"})).json()
    team = (await admin.post("/admin/teams", json={"name": "held"})).json()
    response = await admin.request(method, path.format(key=key["id"], team=team["id"]),
                                   json=sent)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["message"], error["param"], error["code"]) == (message, param, "invalid_value")


async def test_a_bad_query_parameter_is_named_in_the_message(admin: httpx.AsyncClient) -> None:
    """A listing's bad ``limit`` is a 400 whose message and param name it."""
    response = await admin.get("/admin/keys", params={"limit": 0})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["message"], error["param"]) == (
        "Invalid value for 'limit': Input should be greater than or equal to 1.", "limit")


@pytest.mark.parametrize("expires_at", [-1e20, float("nan"), "0001-01-01T00:00:00+05:00",
                                        "9999-12-31T23:59:59-05:00", 1e20])
async def test_an_update_to_an_expiry_out_of_range_is_400(
        admin: httpx.AsyncClient, expires_at: object) -> None:
    """Expiries dates cannot hold (before 1970, past 9999, not a number) are a 400 naming the
    field, not a 500 from the database layer, and the key is unchanged."""
    key = (await admin.post("/admin/keys", json={"name": "k"})).json()
    response = await admin.patch(  # NaN as Python's json writes it (httpx's json= refuses it)
        f"/admin/keys/{key['id']}", content=json.dumps({"expires_at": expires_at}),
        headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "expires_at"
    assert (await admin.get(f"/admin/keys/{key['id']}")).json()["expires_at"] is None


async def test_a_key_cannot_be_created_expired_but_can_be_expired_by_an_update(
        admin: httpx.AsyncClient) -> None:
    """A past ``expires_at`` on create is a 400 saying why (most likely a mistyped year); on an
    update it expires the key at once."""
    refused = await admin.post("/admin/keys", json={"name": "k", "expires_at": "2001-01-01"})
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == (
        "Invalid value for 'expires_at': must be in the future (a key created expired could "
        "never be used).")
    assert (await admin.get("/admin/keys")).json()["data"] == []
    key = (await admin.post("/admin/keys", json={"name": "k"})).json()
    expired = await admin.patch(f"/admin/keys/{key['id']}", json={"expires_at": "2001-01-01"})
    assert expired.status_code == 200 and expired.json()["status"] == "expired"


async def test_privacy_shows_in_create_get_list_and_update(admin: httpx.AsyncClient,
                                                            directory: KeyDirectory) -> None:
    """A key's and a team's privacy setting: set on create, shown by get and list, changed and
    cleared by update (which drops the cached key), a bad value 400 naming the field."""
    team = (await admin.post("/admin/teams", json={"name": "legal",
                                                    "privacy": "private_only"})).json()
    assert team["privacy"] == "private_only"
    created = (await admin.post("/admin/keys", json={"name": "k", "team_id": team["id"],
                                                      "privacy": "redact"})).json()
    assert created["privacy"] == "redact"
    assert (await admin.get(f"/admin/keys/{created['id']}")).json()["privacy"] == "redact"
    listed = (await admin.get("/admin/keys")).json()["data"]
    assert [k["privacy"] for k in listed] == ["redact"]
    assert [t["privacy"] for t in (await admin.get("/admin/teams")).json()["data"]] == [
        "private_only"]
    entry = await directory.resolve(created["key"])
    assert entry is not None and entry.team is not None and entry.team.privacy == "private_only"
    blocked = await admin.patch(f"/admin/keys/{created['id']}", json={"privacy": "block"})
    assert blocked.json()["privacy"] == "block"
    assert directory.cached(hash_key(created["key"])) is None
    entry = await directory.resolve(created["key"])
    assert entry is not None and entry.key.privacy == "block"
    cleared = await admin.patch(f"/admin/keys/{created['id']}", json={"privacy": None})
    assert cleared.json()["privacy"] is None
    await directory.resolve(created["key"])
    assert directory.cached(hash_key(created["key"])) is not None
    team_cleared = await admin.patch(f"/admin/teams/{team['id']}", json={"privacy": None})
    assert team_cleared.json()["privacy"] is None
    assert directory.cached(hash_key(created["key"])) is None  # the team change dropped it
    for method, path in [("PATCH", f"/admin/keys/{created['id']}"),
                         ("PATCH", f"/admin/teams/{team['id']}"), ("POST", "/admin/teams")]:
        bad = await admin.request(method, path, json={"name": "n", "privacy": "loose"})
        assert bad.status_code == 400, path
        assert bad.json()["error"]["param"] == "privacy"


@pytest.mark.parametrize(("content", "content_type", "says"), [
    (b"", "application/json", "The request body is empty; send a JSON object."),
    (b'{"name": "k"', "application/json", "The request body is not valid JSON: "),
    (b"nope", "application/json", "The request body is not valid JSON: "),
    (b'["k"]', "application/json", "The request body must be a JSON object."),
    (b'["k"]', "application/x-www-form-urlencoded",  # curl -d without -H: read as JSON
     "The request body must be a JSON object."),
])
@pytest.mark.parametrize("path", ["/admin/keys", "/admin/teams"])
async def test_a_body_that_is_not_a_json_object_is_400_saying_so(
        admin: httpx.AsyncClient, path: str, content: bytes, content_type: str,
        says: str) -> None:
    """A body that is empty, not JSON or not an object is a 400 in the data plane's words,
    naming no field (FastAPI's own error put the parser's character offset in ``param``)."""
    response = await admin.post(path, content=content, headers={"content-type": content_type})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"].startswith(says), error
    assert error["type"] == "invalid_request_error" and error["param"] is None
    assert (await admin.get(path)).json()["data"] == []  # nothing was created


async def pages(admin: httpx.AsyncClient, path: str, **params: str | int) -> list[list[str]]:
    """The ids of every page of a listing, following ``next_cursor`` to the end."""
    found: list[list[str]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        body = (await admin.get(path, params=query)).json()
        found.append([item["id"] for item in body["data"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return found
        assert len(found) < 20, "the cursor does not move on"


async def test_listings_go_a_page_at_a_time_oldest_first(
        admin: httpx.AsyncClient, directory: KeyDirectory) -> None:
    """Keys and teams page by ``limit`` and ``cursor``: every record once, oldest first, the
    team filter kept across pages; records created in the same microsecond are ordered by id,
    not skipped or repeated; a bad cursor or limit is a 400 naming it."""
    teams = [(await admin.post("/admin/teams", json={"name": f"t{i}"})).json()["id"]
             for i in range(3)]
    keys = [(await admin.post("/admin/keys", json={
        "name": f"k{i}", **({"team_id": teams[0]} if i % 2 else {})})).json()["id"]
        for i in range(7)]
    assert await pages(admin, "/admin/keys", limit=3) == [keys[0:3], keys[3:6], keys[6:]]
    assert await pages(admin, "/admin/keys", limit=7) == [keys]
    assert await pages(admin, "/admin/keys") == [keys]  # default: 100 a page
    assert await pages(admin, "/admin/keys", limit=2, team_id=teams[0]) == [
        [keys[1], keys[3]], [keys[5]]]
    assert await pages(admin, "/admin/teams", limit=2) == [teams[:2], teams[2:]]
    async with directory.store.engine.begin() as conn:  # one instant for all: ids decide
        await conn.execute(update(ApiKey).values(created_at=datetime(2026, 1, 2, tzinfo=UTC)))
    listed = await pages(admin, "/admin/keys", limit=2)
    assert [len(page) for page in listed] == [2, 2, 2, 1]
    assert [key for page in listed for key in page] == sorted(keys)
    bad_queries: list[tuple[dict[str, str | int], str]] = [
        ({"cursor": "nope"}, "cursor"), ({"limit": 0}, "limit"), ({"limit": 1001}, "limit")]
    for params, param in bad_queries:
        for path in ("/admin/keys", "/admin/teams"):
            bad = await admin.get(path, params=params)
            assert bad.status_code == 400 and bad.json()["error"]["param"] == param, bad.text


async def test_null_name_in_an_update_is_400(admin: httpx.AsyncClient) -> None:
    """A PATCH may clear limits, not the name."""
    key = (await admin.post("/admin/keys", json={"name": "k"})).json()
    response = await admin.patch(f"/admin/keys/{key['id']}", json={"name": None})
    assert response.status_code == 400 and response.json()["error"]["param"] == "name"


async def test_unknown_ids_are_404(admin: httpx.AsyncClient) -> None:
    """Unknown key and team ids are 404 with a code; a key for an unknown team too."""
    for method, path in [("GET", "/admin/keys/key_nope"), ("POST", "/admin/keys/key_nope/rotate"),
                         ("POST", "/admin/keys/key_nope/revoke"),
                         ("DELETE", "/admin/keys/key_nope"), ("GET", "/admin/teams/team_nope"),
                         ("DELETE", "/admin/teams/team_nope")]:
        response = await admin.request(method, path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] in {"key_not_found", "team_not_found"}
    response = await admin.post("/admin/keys", json={"name": "k", "team_id": "team_nope"})
    assert response.status_code == 404 and response.json()["error"]["param"] == "team_id"


async def test_access_needs_the_master_key_or_an_admin_key(
        admin: httpx.AsyncClient, directory: KeyDirectory) -> None:
    """No key 401, a plain virtual key 403, an admin virtual key allowed, a revoked one 401."""
    app = keys_app(directory)
    plain = (await admin.post("/admin/keys", json={"name": "p"})).json()["key"]
    boss = (await admin.post("/admin/keys", json={"name": "b", "admin": True})).json()
    for key, status in [(None, 401), ("sk-sb-wrong", 401), (plain, 403), (boss["key"], 200)]:
        async with client_of(app, key) as client:
            assert (await client.get("/admin/keys")).status_code == status, key
    await admin.post(f"/admin/keys/{boss['id']}/revoke")
    async with client_of(app, boss["key"]) as client:
        refused = await client.get("/admin/keys")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"


async def test_without_a_key_database_it_is_503() -> None:
    """A gateway without a database answers 503 keys_unavailable."""
    async with client_of(keys_app(None)) as client:
        response = await client.get("/admin/keys")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "keys_unavailable"


async def test_unreachable_database_is_503() -> None:
    """A database that cannot be reached is 503 database_unavailable, not a 500."""
    engine = make_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/none")
    try:
        async with client_of(keys_app(KeyDirectory(KeyStore(engine), None))) as client:
            listed = await client.get("/admin/keys")
            created = await client.post("/admin/keys", json={"name": "k"})
    finally:
        await engine.dispose()
    for response in (listed, created):
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "database_unavailable"
