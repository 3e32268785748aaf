# ruff: noqa: F811  (pytest passes the imported run_gateway fixture by parameter name)
"""A template reference on ``/v1/embeddings`` is refused (400 ``prompt_not_supported``), as on
``/v1/messages``: never forwarded upstream with its variables."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.api.conftest import (  # noqa: F401  (run_gateway: the fixture, used by name)
    GatewayFactory,
    RunningGateway,
    run_gateway,
)
from tests.privacy.test_gateway import Upstream, config


@pytest.fixture
def gw(run_gateway: GatewayFactory, simulator: str) -> Iterator[RunningGateway]:
    with run_gateway(config(simulator)) as running:
        yield running


@pytest.fixture
def upstream(simulator: str) -> Upstream:
    return Upstream(simulator)


def test_a_template_reference_on_embeddings_is_refused(gw: RunningGateway,
                                                       upstream: Upstream) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        gw.client().embeddings.create(model="open", input="x", extra_body={
            "prompt": {"id": "t1", "variables": {"text": f"notes {upstream.marker}"}}})
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "prompt_not_supported"
    assert body["param"] == "prompt"
    assert upstream.received() == []
