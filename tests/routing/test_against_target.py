"""Which failed attempts count against their target in the latency strategy's order."""

from __future__ import annotations

from app import errors
from app.routing.router import against_target


def test_the_targets_failures_count_the_requests_do_not() -> None:
    upstream = errors.from_upstream_status
    assert against_target(errors.UpstreamConnectError("refused"))
    assert against_target(errors.UpstreamTimeout("slow"))
    assert against_target(upstream(429, "quota spent"))
    assert against_target(upstream(503, "overloaded"))
    assert against_target(upstream(401, "bad key"))  # the gateway's credential: a 502
    assert not against_target(upstream(400, "prompt too long"))
    assert not against_target(upstream(422, "bad parameter"))
    assert not against_target(errors.UpstreamTimeout("the call's deadline passed",
                                                     code="deadline_exceeded"))
