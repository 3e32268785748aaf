# ruff: noqa: F811  (pytest passes the imported fixtures by parameter name)
"""A virtual key's and a team's own privacy setting, end to end: keys made through the admin
API of a running gateway, calls through the openai SDK, the simulator showing what it received.
The setting tightens a model's policy and never loosens it, and an admin change applies from
the key's next call."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.api.conftest import (  # noqa: F401  (run_gateway: the fixture, used by name)
    GatewayFactory,
    RunningGateway,
    run_gateway,
)
from tests.privacy.test_gateway import (  # noqa: F401  (upstream: the fixture, used by name)
    EMAIL,
    PHONE,
    Upstream,
    config,
    upstream,
)


@pytest.fixture
def gw(run_gateway: GatewayFactory, simulator: str) -> Iterator[RunningGateway]:
    raw = config(simulator)
    raw["models"]["watched"] = {"targets": [{"provider": "api", "model": "gpt-4o-mini"}]}
    raw["experiments"] = {"watched-shadow": {"model": "watched", "variants": {
        "control": {"targets": [{"provider": "api", "model": "gpt-4o-mini"}]},
        "copy": {"shadow": True, "targets": [{"provider": "api", "model": "gpt-4o-mini"}]}}}}
    with run_gateway(raw) as running:
        yield running


class Admin:
    """The gateway's admin API (master key), and SDK clients for the keys it makes."""

    def __init__(self, gw: RunningGateway) -> None:
        self.gw = gw
        self.http = gw.http()

    def team(self, **fields: Any) -> dict[str, Any]:
        response = self.http.post("/admin/teams", json={"name": "t", **fields})
        assert response.status_code == 201, response.text
        team: dict[str, Any] = response.json()
        return team

    def key(self, **fields: Any) -> dict[str, Any]:
        response = self.http.post("/admin/keys", json={"name": "k", **fields})
        assert response.status_code == 201, response.text
        key: dict[str, Any] = response.json()
        return key

    def patch(self, path: str, **fields: Any) -> dict[str, Any]:
        response = self.http.patch(path, json=fields)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def client(self, key: dict[str, Any]) -> openai.OpenAI:
        client = openai.OpenAI(base_url=self.gw.url + "/v1", api_key=key["key"], max_retries=0)
        self.gw.opened.append(client)
        return client


@pytest.fixture
def admin(gw: RunningGateway) -> Admin:
    return Admin(gw)


def say(client: openai.OpenAI, model: str, text: str, marker: str) -> str:
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": f"{text} {marker}"}],
        extra_headers={"x-request-id": marker})
    return answer.choices[0].message.content or ""


def test_a_block_key_blocks_on_an_allow_model(gw: RunningGateway, admin: Admin,
                                              upstream: Upstream) -> None:
    """A key with privacy block gets 400 sensitive_data_blocked for a planted email on a model
    whose policy is allow; nothing is sent; a clean call goes through."""
    key = admin.key(privacy="block")
    client = admin.client(key)
    with pytest.raises(openai.BadRequestError) as caught:
        say(client, "open", f"write to {EMAIL}", upstream.marker)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "sensitive_data_blocked"
    assert "EMAIL (1)" in caught.value.body["message"] and EMAIL not in str(caught.value.body)
    assert upstream.received() == []
    record = gw.sink.by_id(upstream.marker)
    assert (record.key_id, record.http_status, record.privacy_action) == (key["id"], 400, "block")
    assert say(client, "open", "hello", upstream.marker + "-clean")
    assert len(upstream.received()) == 1


def test_a_redact_team_redacts_its_keys_calls(admin: Admin, upstream: Upstream) -> None:
    """A team with privacy redact: its key's calls (the key has no setting of its own) reach
    the third party with placeholders, and the answer has the values back."""
    team = admin.team(privacy="redact")
    key = admin.key(team_id=team["id"])
    assert key["privacy"] is None
    text = say(admin.client(key), "open", f"{EMAIL} phones {PHONE}", upstream.marker)
    upstream.assert_never_saw_planted()
    seen = upstream.received()
    assert [e["headers"]["x-who"] for e in seen] == ["third"]
    assert seen[0]["body"]["messages"][0]["content"].startswith("<EMAIL_1> phones <PHONE_1>")
    assert text.startswith(f"Simulated reply to: {EMAIL} phones {PHONE}")


@pytest.mark.parametrize("privacy", [None, "redact"])
def test_a_looser_key_setting_does_not_loosen(admin: Admin, upstream: Upstream,
                                              privacy: str | None) -> None:
    """On a block model a key without a setting, or with a looser one, is still blocked; on
    a private_only model a redact key's call still goes only to the private target."""
    client = admin.client(admin.key(privacy=privacy))
    with pytest.raises(openai.BadRequestError) as caught:
        say(client, "blocked", EMAIL, upstream.marker)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "sensitive_data_blocked"
    assert upstream.received() == []
    assert EMAIL in say(client, "private", EMAIL, upstream.marker)
    assert [e["headers"]["x-who"] for e in upstream.received()] == ["private"]


def test_an_admin_change_applies_from_the_next_call(admin: Admin, upstream: Upstream) -> None:
    """Setting a key's privacy through the admin API blocks its very next call; clearing it
    lets the next one through; a team's change reaches its key's next call the same way."""
    team = admin.team()
    key = admin.key(team_id=team["id"])
    client = admin.client(key)
    assert say(client, "open", EMAIL, upstream.marker + "-1")  # the key is cached now
    admin.patch(f"/admin/keys/{key['id']}", privacy="block")
    with pytest.raises(openai.BadRequestError):
        say(client, "open", EMAIL, upstream.marker + "-2")
    admin.patch(f"/admin/keys/{key['id']}", privacy=None)
    assert say(client, "open", EMAIL, upstream.marker + "-3")
    admin.patch(f"/admin/teams/{team['id']}", privacy="block")
    with pytest.raises(openai.BadRequestError):
        say(client, "open", EMAIL, upstream.marker + "-4")
    sent = {e["body"]["messages"][0]["content"].split()[-1] for e in upstream.received()}
    assert sent == {upstream.marker + "-1", upstream.marker + "-3"}


def test_a_shadow_copy_runs_under_the_callers_setting(gw: RunningGateway, admin: Admin,
                                                      upstream: Upstream) -> None:
    """The shadow copy of a redact key's call on an allow model goes out redacted too."""
    client = admin.client(admin.key(privacy="redact"))
    assert EMAIL in say(client, "watched", EMAIL, upstream.marker)
    deadline = time.monotonic() + 10
    while len(upstream.received()) < 2:
        assert time.monotonic() < deadline, "the shadow copy never reached the simulator"
        time.sleep(0.05)
    upstream.assert_never_saw_planted()
    copies = [r for r in gw.sink.records if r.shadow_of == gw.sink.by_id(upstream.marker).id]
    assert [(c.variant, c.privacy_action) for c in copies] == [("copy", "redact")]

