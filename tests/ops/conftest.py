"""Fixtures for the deployment tests (helpers in ``tests.ops.support``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ops.support import OpsGateway, start_gateway


@pytest.fixture(scope="module")
def ops_gateway(tmp_path_factory: pytest.TempPathFactory, simulator: str) -> Iterator[OpsGateway]:
    """A gateway shared by a module's tests, after some traffic of every kind."""
    with start_gateway(tmp_path_factory.mktemp("ops-gateway"), simulator) as gateway:
        with gateway.http() as client:
            gateway.chat(client)
            gateway.chat(client, stream=True)
            response = client.post("/v1/embeddings", json={"model": "embed", "input": "hi"})
            assert response.status_code == 200, response.text
            missing = client.post("/v1/chat/completions", json={
                "model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]})
            assert missing.status_code == 404, missing.text
        yield gateway
