"""Values a database refuses, in the admin API's ids, filters and bodies, in feedback, and in a
model call's ``prompt`` (issue 8 item 5, beyond the call-log filters): bad input, a 400 or no
match, never "database unavailable" (503) or a 500. Through a running gateway on Postgres (which
stores no NUL character and no version past its INTEGER column) and on SQLite (which takes the
NUL, and overflows on the number)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from app.config import parse_config
from app.db.migrate import upgrade
from app.main import create_app
from app.prompts.model import MAX_VERSION
from app.settings import Settings
from tests.api.conftest import MASTER_KEY, sim_config
from tests.servers import serve

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}


def template_of(database_url: str) -> str:
    """The test template's id: one per database (the module's Postgres one is shared)."""
    return f"greet-{database_url.rsplit('/', 1)[-1][-8:]}"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite file, or the module's Postgres database: one of each for the whole module, as
    the module's gateway on it is (the Postgres one was always shared by the module)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'calls.db'}"
    return str(request.getfixturevalue("pg_database"))


@pytest.fixture(scope="module")
def gateway(database_url: str, simulator: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A gateway whose call log, keys and prompts live in ``database_url`` (migrated), with a
    prompt template (``greet-<database>``) in it; a client with the master key. One per
    database for the module: the tests' lookups and new records do not depend on each other."""
    asyncio.run(upgrade(database_url))
    settings = Settings(master_key=SecretStr(MASTER_KEY), database_url=database_url,
                        spool_dir=tmp_path_factory.mktemp("spool") / "spool")
    app = create_app(settings, config=parse_config(sim_config(simulator), {}),
                     strict_telemetry=True)
    with serve(app) as url, httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        created = client.post("/admin/prompts", json={
            "id": template_of(database_url), "labels": ["production"],
            "version": {"messages": [{"role": "user", "content": "Hello"}]}})
        assert created.status_code in (201, 409), created.text  # the module's Postgres is shared
        yield client


def _bad_input_or_no_match(response: httpx.Response) -> None:
    """A 400 in OpenAI's shape, a 404, or an empty list: anything but a 5xx."""
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        assert response.json()["data"] == []
        return
    assert response.status_code in (400, 404), response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == ("invalid_request_error" if response.status_code == 400
                             else "not_found_error")


NUL_LOOKUPS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/admin/keys/key_1%00", None),
    ("PATCH", "/admin/keys/key_1%00", {"name": "renamed"}),
    ("POST", "/admin/keys/key_1%00/rotate", None),
    ("POST", "/admin/keys/key_1%00/revoke", None),
    ("DELETE", "/admin/keys/key_1%00", None),
    ("GET", "/admin/keys?team_id=team_1%00", None),
    ("GET", "/admin/teams/team_1%00", None),
    ("PATCH", "/admin/teams/team_1%00", {"rpm": 10}),
    ("DELETE", "/admin/teams/team_1%00", None),
    ("GET", "/admin/prompts/greet%00", None),
    ("GET", "/admin/prompts/greet%00/versions/1", None),
    ("GET", "/admin/prompts/greet%00/diff?from=1&to=1", None),
    ("POST", "/admin/prompts/greet%00/versions",
     {"messages": [{"role": "user", "content": "Hi"}]}),
    ("PUT", "/admin/prompts/greet%00/labels/staging", {"version": 1}),
    ("POST", "/admin/prompts/greet%00/labels/production/rollback", {}),
    ("GET", "/admin/calls/call%00/feedback", None),
    ("GET", "/admin/experiments/exp1%00", None),
    ("POST", "/v1/feedback", {"request_id": "call\x00", "score": 1}),
]


@pytest.mark.parametrize(("method", "path", "body"), NUL_LOOKUPS,
                         ids=[f"{m} {p}" for m, p, _ in NUL_LOOKUPS])
def test_a_nul_in_an_id_or_filter_is_bad_input(gateway: httpx.Client, method: str, path: str,
                                               body: dict[str, Any] | None) -> None:
    """A NUL character in an id or a filter finds nothing or is a 400, on either database; the
    database keeps answering after it."""
    _bad_input_or_no_match(gateway.request(method, path, json=body))
    assert gateway.get("/admin/keys").status_code == 200
    assert gateway.get("/admin/prompts").status_code == 200


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/admin/keys", {"name": "nul\x00name"}, "name"),
    ("/admin/teams", {"name": "nul\x00name"}, "name"),
    ("/admin/keys", {"name": "meta", "metadata": {"owner": "a\x00b"}}, "metadata.owner"),
])
def test_a_nul_in_a_key_or_team_is_a_400_naming_the_field(
        gateway: httpx.Client, path: str, body: dict[str, Any], param: str) -> None:
    """A key or team holds no NUL (a name no control character at all: one would forge lines
    in the CLI's listings): refused naming the field, alike on either database."""
    response = gateway.post(path, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


@pytest.mark.parametrize(("path", "body"), [
    ("/admin/prompts", {"id": "nul-content", "version": {
        "messages": [{"role": "user", "content": "a\x00b"}]}}),
])
def test_a_nul_in_a_new_record_is_refused_naming_the_field(
        gateway: httpx.Client, path: str, body: dict[str, Any]) -> None:
    """Postgres cannot store a NUL: a 400 naming the field, alike on either database (SQLite
    stored it), not the database's error naming none, nor a 503."""
    response = gateway.post(path, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "version.messages.0.content"


@pytest.mark.parametrize(("method", "path", "body", "param"), [
    ("GET", f"/admin/prompts/{{id}}/versions/{MAX_VERSION + 1}", None, "number"),
    ("GET", f"/admin/prompts/{{id}}/versions/{2**70}", None, "number"),
    ("GET", f"/admin/prompts/{{id}}/diff?from=1&to={MAX_VERSION + 1}", None, "to"),
    ("PUT", "/admin/prompts/{id}/labels/staging", {"version": MAX_VERSION + 1}, "version"),
    ("PUT", "/admin/prompts/{id}/labels/staging", {"version": 2**70}, "version"),
    ("POST", "/admin/prompts/{id}/labels/production/rollback", {"version": MAX_VERSION + 1},
     "version"),
])
def test_a_version_past_the_column_is_a_400_naming_it(
        gateway: httpx.Client, database_url: str, method: str, path: str,
        body: dict[str, Any] | None, param: str) -> None:
    """Version numbers past the INTEGER column are refused before any query, naming the
    field; the largest one the column holds is an ordinary lookup (404: no such version)."""
    template = template_of(database_url)
    response = gateway.request(method, path.format(id=template), json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    largest = gateway.get(f"/admin/prompts/{template}/versions/{MAX_VERSION}")
    assert largest.status_code == 404, largest.text


@pytest.mark.parametrize("version", [MAX_VERSION + 1, 2**40])
def test_a_model_call_naming_a_version_past_the_column_is_a_400(
        gateway: httpx.Client, database_url: str, version: int) -> None:
    """``prompt: {"version": N}`` past the column is a 400 naming ``prompt.version``, not the
    503 "prompt template database unreachable"; the largest version is a 404 naming it."""
    template = template_of(database_url)
    response = gateway.post("/v1/chat/completions", json={
        "model": "chat", "prompt": {"id": template, "version": version}})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "prompt.version"
    largest = gateway.post("/v1/chat/completions", json={
        "model": "chat", "prompt": {"id": template, "version": MAX_VERSION}})
    assert largest.status_code == 404, largest.text
    assert largest.json()["error"]["param"] == "prompt.version"


@pytest.mark.parametrize(("path", "param"), [
    ("/admin/calls?limit=1_0", "limit"),
    ("/admin/calls?limit=%EF%BC%95", "limit"),  # full-width 5
    ("/admin/calls?limit=%2B5", "limit"),
    ("/admin/calls?prompt_version=1_0", "prompt_version"),
    ("/admin/calls?since=%EF%BC%91h", "since"),  # full-width 1h: was read as 1h
    ("/admin/calls?until=1_0h", "until"),
    ("/admin/keys?limit=1_0", "limit"),
    ("/admin/teams?limit=%EF%BC%95", "limit"),
    ("/admin/prompts/{t}/versions/1_0", "number"),  # was version 10
    ("/admin/prompts/{t}/diff?from=1_0&to=1", "from"),
    ("/admin/prompts/{t}/diff?from=1&to=%EF%BC%91", "to"),
], ids=["limit-underscore", "limit-fullwidth", "limit-plus", "prompt-version", "since",
        "until", "keys", "teams", "version", "from", "to"])
def test_numbers_are_ascii_digits_only(gateway: httpx.Client, database_url: str, path: str,
                                       param: str) -> None:
    """One grammar for every number of a query string or path: ASCII digits (``1_0`` was 10,
    and a full-width digit a number in ``since`` but not in ``limit``); else a 400 naming the
    parameter, code invalid_value."""
    response = gateway.get(path.format(t=template_of(database_url)))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, "invalid_value"), error
    template = template_of(database_url)
    for fine in ("/admin/calls?limit=10&since=1h", "/admin/keys?limit=5",
                 f"/admin/prompts/{template}/versions/1",
                 f"/admin/prompts/{template}/diff?from=1&to=1"):
        assert gateway.get(fine).status_code == 200, fine


def test_a_bad_label_is_invalid_value_like_every_bad_value(gateway: httpx.Client,
                                                          database_url: str) -> None:
    """A label that is no label names it as every other bad value does (was code
    invalid_prompt, without the "Invalid value for" lead)."""
    response = gateway.put(f"/admin/prompts/{template_of(database_url)}/labels/BAD%20LABEL",
                           json={"version": 1})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("label", "invalid_value")
    assert error["message"].startswith("Invalid value for 'label': 'BAD LABEL' is not a label")


@pytest.mark.parametrize("path", ["/admin/prompts/greet%00", "/admin/prompts/%00/versions/1"])
def test_a_nul_in_a_template_id_is_a_400_naming_it(gateway: httpx.Client, path: str) -> None:
    """As for a call id: 400 invalid_value naming ``template_id``, on either database (was the
    database's own text naming nothing on Postgres)."""
    response = gateway.get(path)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("template_id", "invalid_value"), error
    assert "NUL" in error["message"]


@pytest.mark.parametrize(("path", "param"), [
    ("/admin/calls?model=", "model"),
    ("/admin/calls?provider=", "provider"),
    ("/admin/keys?team_id=", "team_id"),
    ("/admin/spend?by=model&model=", "model"),
    ("/admin/experiments/exp1?control=", "control"),
])
def test_an_empty_filter_is_refused_alike(gateway: httpx.Client, path: str,
                                          param: str) -> None:
    """An empty filter value is one 400 naming it everywhere, as /admin/spend's was (calls and
    keys answered an empty list, experiments variant_not_found)."""
    response = gateway.get(path)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, "invalid_value"), error
    assert f"'{param}' is empty; leave it out" in error["message"]


def test_a_cursor_is_refused_by_another_listing(gateway: httpx.Client) -> None:
    """A next_cursor resumes its own listing only: another listing's is a 400 invalid_cursor
    (it was taken, and answered from an arbitrary position, or nothing)."""
    for i in range(2):
        assert gateway.post("/admin/keys", json={"name": f"cursor-key-{i}"}).status_code == 201
        assert gateway.post("/admin/teams", json={"name": f"cursor team {i} "
                                                          f"{id(gateway)}"}).status_code == 201
    keys_cursor = gateway.get("/admin/keys", params={"limit": 1}).json()["next_cursor"]
    teams_cursor = gateway.get("/admin/teams", params={"limit": 1}).json()["next_cursor"]
    assert keys_cursor and teams_cursor
    for path, cursor in (("/admin/teams", keys_cursor), ("/admin/calls", keys_cursor),
                         ("/admin/keys", teams_cursor)):
        response = gateway.get(path, params={"cursor": cursor})
        assert response.status_code == 400, (path, response.text)
        error = response.json()["error"]
        assert (error["param"], error["code"]) == ("cursor", "invalid_cursor")
    assert gateway.get("/admin/keys", params={"cursor": keys_cursor}).status_code == 200
    assert gateway.get("/admin/teams", params={"cursor": teams_cursor}).status_code == 200
