"""A model no route serves is stored as named (``public_model``) whoever asks: the master key,
a virtual key without limits, or one whose limits make admission look the route up first (its
output reservation), which raised the 404 before the name was recorded."""

from __future__ import annotations

import uuid

import pytest

from tests.api.conftest import MASTER_KEY, RunningGateway


@pytest.mark.parametrize("caller", ["master", "key", "key-with-tpm", "key-with-rpm"])
def test_an_unknown_model_is_stored_as_named(gateway: RunningGateway, caller: str) -> None:
    key = MASTER_KEY
    if caller != "master":
        limits = {"key-with-tpm": {"tpm": 100_000}, "key-with-rpm": {"rpm": 1_000}}
        made = gateway.http().post("/admin/keys",
                                   json={"name": f"unknown-{caller}", **limits.get(caller, {})})
        assert made.status_code == 201, made.text
        key = made.json()["key"]
    marker, model = uuid.uuid4().hex, f"made-up-{uuid.uuid4().hex[:8]}"
    response = gateway.http().post(
        "/v1/chat/completions", headers={"Authorization": f"Bearer {key}", "x-request-id": marker},
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "model_not_found"
    assert gateway.sink.by_id(marker).public_model == model
