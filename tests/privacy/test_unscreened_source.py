# ruff: noqa: F811  (pytest passes the imported fixtures by parameter name)
"""A token-id refusal names where the rule came from: the caller's key (or team) setting that
tightened an ``allow`` model, or the model's own policy; and it quotes the model's name once."""

from __future__ import annotations

import openai
import pytest

from tests.api.conftest import (  # noqa: F401  (run_gateway: the fixture, used by name)
    RunningGateway,
    run_gateway,
)
from tests.privacy.test_gateway import Upstream, upstream  # noqa: F401  (fixture)
from tests.privacy.test_keys import Admin, admin, gw  # noqa: F401  (fixtures)

IDS = [1031, 13, 8574]


def test_a_keys_setting_is_named_as_the_source(gw: RunningGateway, admin: Admin,
                                               upstream: Upstream) -> None:
    client = admin.client(admin.key(privacy="private_only"))
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="open", prompt=IDS, user=upstream.marker)
    body = caught.value.body
    assert isinstance(body, dict) and body["code"] == "token_ids_not_screened"
    message = body["message"]
    assert "under the caller's privacy setting (its key's or team's)" in message
    assert "model 'open' has none" in message
    assert "privacy policy of model" not in message and "''" not in message
    with pytest.raises(openai.BadRequestError) as modelled:
        admin.client(admin.key()).completions.create(model="blocked", prompt=IDS,
                                                     user=upstream.marker)
    assert isinstance(modelled.value.body, dict)
    assert "under the privacy policy of model 'blocked'" in modelled.value.body["message"]
    assert upstream.received() == []
