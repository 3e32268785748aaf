"""``/v1/messages`` answers of a key with limits, through a running gateway: Anthropic's
``anthropic-ratelimit-*`` headers (resets as RFC 3339 instants) beside OpenAI's, on answers,
streams and refusals."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from app.inbound.anthropic_limits import rfc3339, seconds_of
from tests.calllog.servers import PrivateRedis
from tests.governance.conftest import HI, Fleet, create_key

BODY = {"model": "chat", "max_tokens": 5, "messages": HI}


def _limits(response: httpx.Response, *, requests_left: int) -> None:
    headers = response.headers
    assert headers["anthropic-ratelimit-requests-limit"] == "3"
    assert headers["anthropic-ratelimit-requests-remaining"] == str(requests_left)
    assert headers["anthropic-ratelimit-tokens-limit"] == "100000"
    assert int(headers["anthropic-ratelimit-tokens-remaining"]) < 100000
    for kind in ("requests", "tokens"):
        reset = headers[f"anthropic-ratelimit-{kind}-reset"]
        at = datetime.strptime(reset, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        ahead = at.timestamp() - datetime.now(UTC).timestamp()
        assert 0 < ahead <= 62, reset  # the window empties 61 s after its last charge
        assert headers[f"x-ratelimit-reset-{kind}"]  # OpenAI's stay


def test_messages_carry_anthropics_rate_limit_headers(fleet_factory: Any,
                                                      redis_server: PrivateRedis) -> None:
    fleet: Fleet = fleet_factory(redis_server.url)
    (url,) = fleet.start(1)
    key = create_key(fleet, rpm=3, tpm=100000)["key"]
    with httpx.Client(base_url=url, timeout=30,
                      headers={"x-api-key": key, "anthropic-version": "2023-06-01"}) as client:
        answered = client.post("/v1/messages", json=BODY)
        assert answered.status_code == 200, answered.text
        _limits(answered, requests_left=2)
        with client.stream("POST", "/v1/messages", json={**BODY, "stream": True}) as streamed:
            assert streamed.status_code == 200
            _limits(streamed, requests_left=1)
            streamed.read()
        assert client.post("/v1/messages", json=BODY).status_code == 200
        refused = client.post("/v1/messages", json=BODY)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["type"] == "rate_limit_error"
        _limits(refused, requests_left=0)
        assert len(refused.headers.get_list("anthropic-ratelimit-requests-limit")) == 1


def test_resets_as_anthropic_writes_them() -> None:
    assert [seconds_of(d) for d in (b"0s", b"56s", b"1m1s", b"1h0m0s", b"junk")] == [
        0, 56, 61, 3600, 0]
    assert rfc3339(1755780059.9) == b"2025-08-21T12:40:59Z"
