"""``POST /v1/feedback`` at the HTTP edge: a JSON body is read whatever its ``Content-Type``, as
the model calls read theirs (``curl -d`` sends ``application/x-www-form-urlencoded``), as the
admin API reads its bodies; and each post counts as one request against the
caller's RPM limits, its key's and its team's, in the model calls' windows, with neither tokens
nor spend (``app.feedback.admit``), on the in-process limiter and on Redis alike."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.config import parse_config
from app.main import create_app
from tests.api.conftest import MASTER_KEY, settings_in, sim_config
from tests.calllog.servers import PrivateRedis
from tests.servers import serve

MASTER = {"Authorization": f"Bearer {MASTER_KEY}"}
HI = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def _chat(url: str, key: str) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", json=HI, timeout=30,
                      headers={"Authorization": f"Bearer {key}"})


def _feedback(url: str, key: str, call_id: str) -> httpx.Response:
    return httpx.post(url + "/v1/feedback", json={"request_id": call_id, "score": 1},
                      headers={"Authorization": f"Bearer {key}"}, timeout=30)


def _admin(url: str, path: str, **fields: Any) -> dict[str, Any]:
    created = httpx.post(url + path, json={"name": "fb", **fields}, headers=MASTER)
    assert created.status_code == 201, created.text
    body: dict[str, Any] = created.json()
    return body


@contextmanager
def _gateway(tmp_path: Path, simulator: str, redis: str | None) -> Iterator[str]:
    """A gateway on the simulator whose call log (SQLite) feedback finds calls in; its limits
    counted in Redis at ``redis``, else in its own process."""
    settings = settings_in(tmp_path).model_copy(update={"redis_url": redis})
    app = create_app(settings, config=parse_config(sim_config(simulator), {}),
                     strict_telemetry=True)
    with serve(app) as url:
        yield url


@pytest.fixture
def logged(tmp_path: Path, simulator: str) -> Iterator[str]:
    with _gateway(tmp_path, simulator, None) as url:
        yield url


# ---- the Content-Type


@pytest.mark.parametrize("content_type", [
    "application/x-www-form-urlencoded", "text/plain", None, "application/json"])
def test_feedback_takes_json_whatever_its_content_type(logged: str,
                                                       content_type: str | None) -> None:
    """A JSON body sent as ``curl -d`` sends it (form-encoded), as text or with no type is
    stored as with ``application/json``: 201."""
    call_id = _chat(logged, MASTER_KEY).headers["x-switchboard-call-id"]
    headers = {**MASTER, **({"Content-Type": content_type} if content_type else {})}
    response = httpx.post(logged + "/v1/feedback", headers=headers,
                          content=b'{"request_id": "%s", "score": 0.5}' % call_id.encode())
    assert response.status_code == 201, response.text
    assert response.json()["call_id"] == call_id


def test_a_form_body_is_a_400_saying_it_is_not_json(logged: str) -> None:
    """A real form (``request_id=x&score=1``) is a 400 saying the body is not JSON."""
    response = httpx.post(logged + "/v1/feedback", headers=MASTER,
                          data={"request_id": "x", "score": "1"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"].startswith("The request body is not valid JSON")


def test_a_body_not_an_object_is_not_told_to_change_its_type(logged: str) -> None:
    """A JSON array is a 400 saying the body must be a JSON object, without telling the client
    to send ``application/json`` (feedback takes any type)."""
    response = httpx.post(logged + "/v1/feedback", headers=MASTER, content=b"[1]")
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    assert message == "The request body must be a JSON object."


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain"])
def test_the_admin_api_takes_json_whatever_its_content_type(logged: str,
                                                            content_type: str) -> None:
    """The admin API reads a JSON body as feedback and the model calls do, whatever its
    ``Content-Type`` (``curl -d`` without ``-H``): teams, keys, prompt templates, their
    versions and labels are made as with ``application/json``."""
    headers = {**MASTER, "Content-Type": content_type}

    def send(method: str, path: str, body: bytes, status: int) -> dict[str, Any]:
        response = httpx.request(method, logged + path, headers=headers, content=body)
        assert response.status_code == status, (path, response.text)
        answer: dict[str, Any] = response.json()
        return answer

    team = send("POST", "/admin/teams", b'{"name": "t"}', 201)
    key = send("POST", "/admin/keys", b'{"name": "k", "team_id": "%s"}' % team["id"].encode(),
               201)
    assert key["team_id"] == team["id"]
    send("POST", "/admin/prompts",
         b'{"id": "ct", "version": {"messages": [{"role": "user", "content": "hi"}]}}', 201)
    send("POST", "/admin/prompts/ct/versions",
         b'{"messages": [{"role": "user", "content": "hello"}]}', 201)
    send("PUT", "/admin/prompts/ct/labels/production", b'{"version": 2}', 200)
    labels = httpx.get(logged + "/admin/prompts/ct", headers=MASTER).json()["labels"]
    assert labels["production"] == 2, labels
    not_object = send("POST", "/admin/teams", b"[1]", 400)  # no advice to change the type
    assert not_object["error"]["message"] == "The request body must be a JSON object."


# ---- the rate limits


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with PrivateRedis() as server:
        yield server.url


@pytest.fixture(params=["local", "redis"])
def limited(request: pytest.FixtureRequest, tmp_path: Path, simulator: str) -> Iterator[str]:
    """A gateway counting limits in its own process, or in Redis."""
    redis = request.getfixturevalue("redis_url") if request.param == "redis" else None
    with _gateway(tmp_path, simulator, redis) as url:
        yield url


def test_feedback_counts_against_the_keys_rpm(limited: str) -> None:
    """With ``rpm: 3``, a call and two feedback posts use the minute: the next feedback is a
    429 ``rate_limit_exceeded`` with ``Retry-After`` and ``x-ratelimit-*-requests``, as a
    model call's refusal; and so is the next model call."""
    key = _admin(limited, "/admin/keys", rpm=3)["key"]
    call_id = _chat(limited, key).headers["x-switchboard-call-id"]
    first = _feedback(limited, key, call_id)
    assert first.status_code == 201, first.text
    assert (first.headers["x-ratelimit-limit-requests"],
            first.headers["x-ratelimit-remaining-requests"]) == ("3", "1")
    assert _feedback(limited, key, call_id).status_code == 201
    refused = _feedback(limited, key, call_id)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"] == {
        "message": refused.json()["error"]["message"], "type": "requests",
        "param": None, "code": "rate_limit_exceeded"}
    assert refused.json()["error"]["message"].startswith("Rate limit reached for this key")
    assert int(refused.headers["retry-after"]) >= 1
    assert (refused.headers["x-ratelimit-limit-requests"],
            refused.headers["x-ratelimit-remaining-requests"]) == ("3", "0")
    assert _chat(limited, key).status_code == 429


def test_feedback_counts_against_the_teams_rpm(logged: str) -> None:
    """A key with no limit of its own in a team with ``rpm: 2``: a call and one feedback use
    the team's minute, the next feedback is a 429 naming the team."""
    team = _admin(logged, "/admin/teams", rpm=2)
    key = _admin(logged, "/admin/keys", team_id=team["id"])["key"]
    call_id = _chat(logged, key).headers["x-switchboard-call-id"]
    assert _feedback(logged, key, call_id).status_code == 201
    refused = _feedback(logged, key, call_id)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["message"].startswith("Rate limit reached for this team")


def test_feedback_charges_no_tokens_and_no_spend(logged: str) -> None:
    """A key whose budget is spent is refused model calls (429 ``insufficient_quota``) but
    its feedback is still taken: a post charges one request, no tokens (no token headers)."""
    key = _admin(logged, "/admin/keys", rpm=10, tpm=100_000, budget_usd=0.000001)["key"]
    answered = _chat(logged, key)
    assert answered.status_code == 200, answered.text
    spent = _chat(logged, key)
    assert spent.json()["error"]["code"] == "insufficient_quota", spent.text
    taken = _feedback(logged, key, answered.headers["x-switchboard-call-id"])
    assert taken.status_code == 201, taken.text
    assert taken.headers["x-ratelimit-remaining-requests"] == "8"  # the call and this post
    assert "x-ratelimit-limit-tokens" not in taken.headers


def test_the_master_key_is_not_limited(logged: str) -> None:
    """The master key's feedback carries no rate-limit headers: it has no limits."""
    call_id = _chat(logged, MASTER_KEY).headers["x-switchboard-call-id"]
    taken = _feedback(logged, MASTER_KEY, call_id)
    assert taken.status_code == 201, taken.text
    assert not any(name.startswith("x-ratelimit") for name in taken.headers)
