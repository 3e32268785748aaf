# ruff: noqa: F811  (pytest passes the imported fixtures by parameter name)
"""Shadow copies obey the privacy policy as their originals do, on the shadow variant's own
targets: through a running gateway, the simulator showing what it received."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from app.calllog import CallRecord
from tests.api.conftest import (  # noqa: F401  (run_gateway: the fixture, used by name)
    GatewayFactory,
    RunningGateway,
    run_gateway,
)
from tests.privacy.test_gateway import (  # noqa: F401  (upstream: the fixture, used by name)
    EMAIL,
    PLANTED,
    Upstream,
    config,
    upstream,
)

THIRD = [{"provider": "api", "model": "gpt-4o-mini"}]
PRIVATE = [{"provider": "onprem", "model": "gpt-4o-mini"}]


def shadowed(model: str, action: str, control: list[dict[str, str]],
             **shadows: list[dict[str, str]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A public model under ``action`` and its experiment: ``control`` serves, each shadow
    variant gets a copy of every answered call."""
    variants: dict[str, Any] = {"control": {"targets": control}}
    variants.update({name: {"shadow": True, "targets": targets}
                     for name, targets in shadows.items()})
    return ({"targets": control, "privacy": {"action": action}},
            {"model": model, "variants": variants})


@pytest.fixture
def gw(run_gateway: GatewayFactory, simulator: str) -> Iterator[RunningGateway]:
    raw = config(simulator)
    raw["experiments"] = {}
    for model, action, control, shadows in [
        ("r-private", "redact", PRIVATE, {"third": THIRD}),
        ("r-third", "redact", THIRD, {"private": PRIVATE}),
        ("p", "private_only", PRIVATE, {"third": THIRD, "mixed": THIRD + PRIVATE}),
        ("b", "block", THIRD, {"private": PRIVATE}),
        ("a", "allow", THIRD, {"third": THIRD}),
    ]:
        raw["models"][model], raw["experiments"][f"{model}-x"] = shadowed(
            model, action, control, **shadows)
    with run_gateway(raw) as running:
        yield running


def copies_of(gw: RunningGateway, marker: str, count: int) -> list[CallRecord]:
    """The ``count`` shadow copies' records of the call sent with ``marker`` (waiting 10 s at
    most for them), by variant name."""
    original = gw.sink.by_id(marker)
    deadline = time.monotonic() + 10
    while True:
        found = [r for r in gw.sink.records if r.shadow_of == original.id]
        if len(found) >= count:
            return sorted(found, key=lambda r: r.variant or "")
        assert time.monotonic() < deadline, f"{len(found)} of {count} shadow copies came"
        time.sleep(0.05)


def ask(gw: RunningGateway, model: str, marker: str) -> str:
    answer = gw.client().chat.completions.create(
        model=model, messages=[{"role": "user", "content": f"{EMAIL} {marker}"}],
        extra_headers={"x-request-id": marker})
    return answer.choices[0].message.content or ""


def test_redact_a_third_party_shadow_of_a_private_original_gets_placeholders(
        gw: RunningGateway, upstream: Upstream) -> None:
    """redact: the original's private target gets the values (nothing leaves); its copy to a
    third-party shadow gets placeholders; the copy's row says so, its captured body too."""
    assert EMAIL in ask(gw, "r-private", upstream.marker)
    (copy,) = copies_of(gw, upstream.marker, 1)
    seen = {e["headers"]["x-who"]: e["body"]["messages"][0]["content"]
            for e in upstream.received()}
    assert seen == {"private": f"{EMAIL} {upstream.marker}",
                    "third": f"<EMAIL_1> {upstream.marker}"}
    assert (copy.variant, copy.status, copy.privacy_action) == ("third", "ok", "redact")
    assert copy.privacy_entities == {"EMAIL": 1}
    assert EMAIL not in str(copy.request_body) and EMAIL not in str(copy.response_body)


def test_redact_a_private_shadow_of_a_redacted_original_gets_the_values(
        gw: RunningGateway, upstream: Upstream) -> None:
    """redact: the copy starts from the client's body, not the original's redacted one, so a
    private shadow gets what the client sent (as a private original would)."""
    assert EMAIL in ask(gw, "r-third", upstream.marker)
    (copy,) = copies_of(gw, upstream.marker, 1)
    seen = {e["headers"]["x-who"]: e["body"]["messages"][0]["content"]
            for e in upstream.received()}
    assert seen == {"third": f"<EMAIL_1> {upstream.marker}",
                    "private": f"{EMAIL} {upstream.marker}"}
    assert (copy.variant, copy.status) == ("private", "ok")
    assert EMAIL not in str(copy.request_body)


def test_private_only_copies_never_reach_a_third_party(gw: RunningGateway,
                                                       upstream: Upstream) -> None:
    """private_only: a copy to a shadow variant with only a third-party target fails closed
    (503 no_private_target in its row, nothing sent); one to a variant with a private target
    goes there only."""
    assert EMAIL in ask(gw, "p", upstream.marker)
    mixed, third = copies_of(gw, upstream.marker, 2)
    assert (third.variant, third.status, third.http_status) == ("third", "error", 503)
    assert "private target" in (third.error_message or "")
    assert (mixed.variant, mixed.status, mixed.provider) == ("mixed", "ok", "onprem")
    assert [e["headers"]["x-who"] for e in upstream.received()] == ["private", "private"]
    for record in (mixed, third):
        assert all(value not in str(record.request_body) for value in PLANTED)


def test_block_a_blocked_call_has_no_copy(gw: RunningGateway, upstream: Upstream) -> None:
    """block: the original is refused, so nothing is copied; the call after it (clean) is
    copied as usual, and by then a copy of the blocked one would have been made first."""
    with pytest.raises(openai.BadRequestError):
        ask(gw, "b", upstream.marker)
    clean = upstream.marker + "-clean"
    gw.client().chat.completions.create(
        model="b", messages=[{"role": "user", "content": f"hello {clean}"}],
        extra_headers={"x-request-id": clean})
    copies_of(gw, clean, 1)
    assert [r.shadow_of for r in gw.sink.records
            if r.shadow_of == gw.sink.by_id(upstream.marker).id] == []
    assert all(EMAIL not in str(e["body"]) for e in upstream.received())


def test_allow_copies_go_as_sent(gw: RunningGateway, upstream: Upstream) -> None:
    """allow: nothing scanned, the copy carries the client's text as the original did."""
    ask(gw, "a", upstream.marker)
    (copy,) = copies_of(gw, upstream.marker, 1)
    assert copy.privacy_action is None
    assert [EMAIL in str(e["body"]) for e in upstream.received()] == [True, True]


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_redact_a_copy_of_a_streamed_call_is_not_streamed(
        gw: RunningGateway, upstream: Upstream, endpoint: str) -> None:
    """redact: the copy of a streamed, redacted call starts from the client's body without
    ``stream`` and ``stream_options`` (a copy is never streamed), and its row is ok."""
    client, text = gw.client(), f"{EMAIL} {upstream.marker}"
    headers = {"x-request-id": upstream.marker}
    if endpoint == "chat":
        pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="r-third", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": text}], extra_headers=headers) if c.choices]
    else:
        pieces = [c.choices[0].text for c in client.completions.create(
            model="r-third", stream=True, stream_options={"include_usage": True},
            prompt=text, extra_headers=headers) if c.choices]
    assert EMAIL in "".join(pieces)
    (copy,) = copies_of(gw, upstream.marker, 1)
    assert (copy.variant, copy.status, copy.http_status) == ("private", "ok", 200)
    seen = {e["headers"]["x-who"]: e["body"] for e in upstream.received()}
    assert seen["third"]["stream"] is True and EMAIL not in str(seen["third"])
    assert "stream" not in seen["private"] and "stream_options" not in seen["private"]
    assert EMAIL in str(seen["private"])
