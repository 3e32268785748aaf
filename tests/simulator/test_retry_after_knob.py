"""``X-Sim-Retry-After``: the ``Retry-After`` an injected error carries."""

from __future__ import annotations

import httpx

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_an_injected_error_carries_the_retry_after_asked_for(http: httpx.Client) -> None:
    """Any injected status carries the header's value as it was given; a value that is no
    header value is a 400."""
    for status, value in (("429", "60"), ("503", "Wed, 21 Oct 2015 07:28:00 GMT")):
        answer = http.post("/v1/chat/completions", json=CHAT,
                           headers={"X-Return-Error": status, "X-Sim-Retry-After": value})
        assert (answer.status_code, answer.headers["retry-after"]) == (int(status), value)
    refused = http.post("/v1/chat/completions", json=CHAT,
                        headers={"X-Return-Error": "429", "X-Sim-Retry-After": "x" * 65})
    assert refused.status_code == 400 and "X-Sim-Retry-After" in refused.text
