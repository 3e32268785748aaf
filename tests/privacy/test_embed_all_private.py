# ruff: noqa: F811  (pytest passes the imported fixtures by parameter name)
"""Under ``redact``, an embedding to a model whose targets are all private gets the original,
as redact's general rule (and its rule for token ids) says: nothing leaves. With a third-party
target, the model's ``embeddings`` setting still applies (``block`` by default)."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.api.conftest import (  # noqa: F401  (run_gateway: the fixture, used by name)
    GatewayFactory,
    RunningGateway,
    run_gateway,
)
from tests.privacy.test_gateway import EMAIL, Upstream, config, upstream  # noqa: F401


@pytest.fixture
def gw(run_gateway: GatewayFactory, simulator: str) -> Iterator[RunningGateway]:
    raw = config(simulator)
    raw["models"]["embed-onprem"] = {
        "targets": [{"provider": "onprem", "model": "text-embedding-3-small"}],
        "privacy": {"action": "redact"}}
    with run_gateway(raw) as running:
        yield running


def test_redact_sends_the_original_to_an_all_private_embedding_model(
        gw: RunningGateway, upstream: Upstream) -> None:
    client, marker = gw.client(), upstream.marker
    text = f"mail {EMAIL} about {marker}"
    answer = client.embeddings.create(model="embed-onprem", input=[text, "plain"],
                                      extra_headers={"x-request-id": marker})
    assert len(answer.data) == 2
    (sent,) = upstream.received()
    assert sent["headers"]["x-who"] == "private" and sent["body"]["input"][0] == text
    record = gw.sink.by_id(marker)
    assert (record.http_status, record.privacy_action) == (200, "redact")
    with pytest.raises(openai.BadRequestError) as caught:  # third party: embeddings' block
        client.embeddings.create(model="embed", input=text)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "sensitive_data_blocked"
    assert len(upstream.received()) == 1
