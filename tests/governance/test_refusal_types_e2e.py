"""A keyed call's rate-limit refusals on a live gateway, through the openai SDK: the ``type`` of
each names the limit that refused as OpenAI's does (``requests``, ``tokens``), the SDK still
raises ``RateLimitError`` (it maps by status), ``/v1/messages`` keeps Anthropic's
``rate_limit_error``, and a call too large carries the ``x-ratelimit-*`` headers."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.calllog.servers import PrivateRedis
from tests.governance.conftest import HI, Fleet, create_key, sdk


def test_refusals_name_their_limit_and_sdks_still_see_rate_limits(
        fleet_factory: Any, redis_server: PrivateRedis) -> None:
    """RPM 1: the second call is ``RateLimitError`` with ``type: requests`` (and Anthropic's
    ``rate_limit_error`` on ``/v1/messages``); TPM 1,000 and ``max_tokens: 5000`` with the
    4,096 reservation: ``RateLimitError`` "Request too large" with ``type: tokens``, quoting
    the 5,000 asked, with the token headers and ``x-should-retry: false``."""
    fleet: Fleet = fleet_factory(redis_server.url)
    url = fleet.start()[0]
    key = create_key(fleet, rpm=1)["key"]
    client = sdk(url, key)
    client.chat.completions.create(model="chat", messages=HI, max_tokens=5)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="chat", messages=HI, max_tokens=5)
    assert caught.value.type == "requests" and caught.value.code == "rate_limit_exceeded"
    messages = httpx.post(f"{url}/v1/messages", timeout=30, headers={"x-api-key": key},
                          json={"model": "chat", "max_tokens": 5, "messages": HI})
    assert messages.status_code == 429, messages.text
    assert messages.json()["error"]["type"] == "rate_limit_error"

    small = sdk(url, create_key(fleet, tpm=1000)["key"])
    with pytest.raises(openai.RateLimitError) as caught:
        small.chat.completions.with_raw_response.create(model="chat", messages=HI,
                                                        max_tokens=5000)
    assert caught.value.type == "tokens" and caught.value.code == "rate_limit_exceeded"
    assert "Request too large" in caught.value.message
    assert "limit 1000, requested 50" in caught.value.message  # 5,000 and the prompt
    headers = caught.value.response.headers
    assert headers["x-ratelimit-limit-tokens"] == "1000"
    assert headers["x-ratelimit-remaining-tokens"] == "1000"
    assert headers["x-should-retry"] == "false" and "retry-after" not in headers
