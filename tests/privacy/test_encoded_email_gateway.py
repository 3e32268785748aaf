# ruff: noqa: F811  (pytest passes the imported fixtures by parameter name)
"""End to end: an email address whose ``@`` is percent-encoded (in a URL) never reaches a
third party under ``redact``, and comes back into the answer as the client wrote it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api.conftest import (  # noqa: F401  (run_gateway: the fixture, used by name)
    GatewayFactory,
    RunningGateway,
    run_gateway,
)
from tests.privacy.test_gateway import (  # noqa: F401  (upstream: the fixture, used by name)
    Upstream,
    config,
    upstream,
)

ENCODED = "ann.lee%40corp-example.com"
TWICE = "bo%2540corp-example.com"


@pytest.fixture
def gw(run_gateway: GatewayFactory, simulator: str) -> Iterator[RunningGateway]:
    with run_gateway(config(simulator)) as running:
        yield running


def test_encoded_email_redacted_and_restored(gw: RunningGateway, upstream: Upstream) -> None:
    text = f"to={ENCODED}&r={TWICE} {upstream.marker}"
    answer = gw.client().chat.completions.create(
        model="redacted", messages=[{"role": "user", "content": text}])
    sent = str(upstream.received()[0]["body"])
    assert ENCODED not in sent and TWICE not in sent and "ann.lee" not in sent
    assert "<EMAIL_1>" in sent and "<EMAIL_2>" in sent
    reply = answer.choices[0].message.content or ""
    assert f"to={ENCODED}&r=" in reply and "<EMAIL_1>" not in reply  # the reply's first words
