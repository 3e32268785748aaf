"""A ``POST /v1/feedback`` refused by an RPM limit, through a running gateway: counted in
``switchboard_ratelimit_rejections_total`` as a model call's refusal is."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.calllog.servers import PrivateRedis
from tests.governance.conftest import HI, Fleet, create_key


def _rejections(fleet: Fleet, scope: str) -> float:
    with fleet.admin() as admin:
        text = admin.get("/metrics").text
    found = re.search(rf'^switchboard_ratelimit_rejections_total{{scope="{scope}"}} (\S+)$',
                      text, re.M)
    return 0.0 if found is None else float(found.group(1))


def test_a_feedback_refused_by_rpm_counts_as_a_rejection(fleet_factory: Any,
                                                         redis_server: PrivateRedis) -> None:
    fleet: Fleet = fleet_factory(redis_server.url)
    (url,) = fleet.start(1)
    key = create_key(fleet, rpm=1)["key"]
    with httpx.Client(base_url=url, timeout=30,
                      headers={"Authorization": f"Bearer {key}"}) as client:
        called = client.post("/v1/chat/completions", json={"model": "chat", "messages": HI})
        assert called.status_code == 200, called.text
        call_id = called.headers["x-switchboard-call-id"]
        before = _rejections(fleet, "key")
        for _ in range(2):
            refused = client.post("/v1/feedback", json={"request_id": call_id, "score": 1})
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert _rejections(fleet, "key") == before + 2
