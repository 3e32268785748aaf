# ruff: noqa: F811  (pytest passes the imported run_gateway fixture by parameter name)
"""What a call refused before the privacy stage scanned it stores of its request's ``user``,
``metadata.user_id`` and error message: screened with the call's policy when the record is
sealed (``Pipeline.seal``), as the stage screens the calls it scans; kept as sent when the
policy has nothing to do."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.calllog import CallRecord
from tests.api.conftest import (  # noqa: F401  (run_gateway: the fixture, used by name)
    GatewayFactory,
    RunningGateway,
    run_gateway,
)
from tests.privacy.test_gateway import EMAIL, config


@pytest.fixture
def gw(run_gateway: GatewayFactory, simulator: str) -> Iterator[RunningGateway]:
    raw = config(simulator)
    raw["privacy"] = {"action": "redact"}  # a model no route serves runs under this one
    raw["models"]["open"]["privacy"] = {"action": "allow"}
    with run_gateway(raw) as running:
        yield running


def post(gw: RunningGateway, body: dict[str, Any], *, key: str | None = None,
         path: str = "/v1/chat/completions") -> tuple[httpx.Response, CallRecord]:
    """``body`` posted (``key``: a virtual key, else the master key); the answer and the
    call's record."""
    marker = uuid.uuid4().hex
    headers = {"x-request-id": marker}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    response = gw.http().post(path, json=body, headers=headers)
    return response, gw.sink.by_id(marker)


def key(gw: RunningGateway, **fields: Any) -> str:
    response = gw.http().post("/admin/keys", json={"name": "k", **fields})
    assert response.status_code == 201, response.text
    made: str = response.json()["key"]
    return made


def hello(model: str, **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **fields}


def test_a_model_the_key_may_not_use(gw: RunningGateway) -> None:
    """403 model_not_allowed (the authenticate stage, before privacy): the requested model's
    redact policy screens the stored end user."""
    response, record = post(gw, hello("redacted", user=EMAIL), key=key(gw, models=["open"]))
    assert response.status_code == 403
    assert (record.privacy_action, record.end_user) == (None, "<EMAIL_1>")


def test_the_keys_own_setting_screens_an_allowed_models_refusal(gw: RunningGateway) -> None:
    """A key whose own privacy is block, refused a model whose policy is allow: the key's
    setting tightens that policy, so the end user is screened too."""
    response, record = post(gw, hello("open", user=EMAIL),
                            key=key(gw, models=["redacted"], privacy="block"))
    assert response.status_code == 403
    assert record.end_user == "<EMAIL_1>"


def test_every_copy_of_a_value_found_in_context_is_screened(gw: RunningGateway) -> None:
    """A secret found after ``password=`` and a bare number found after "call", each then
    repeated without its context word: the refused call stores the placeholder for every
    copy, in the end user and in the error message that quotes the model (as an answered
    call's record does)."""
    secret = "Xk9mP2vL8qR4tZ7w"
    user = f"password={secret}, retype {secret}; call 4155552671 or 4155552671"
    response, record = post(gw, hello(f"no-such-{secret}", user=user))
    assert response.status_code == 404
    assert record.end_user == "password=<SECRET_1>, retype <SECRET_1>; call <PHONE_1> or <PHONE_1>"
    assert record.error_message is not None
    assert secret not in record.error_message and "<SECRET_1>" in record.error_message


def test_an_unknown_model_named_by_an_email(gw: RunningGateway) -> None:
    """404 model_not_found under the default policy: the end user, the error message (which
    quotes the model) and the model stored as named hold one placeholder for the one value;
    the client's answer quotes what it sent."""
    response, record = post(gw, hello(EMAIL, user=EMAIL))
    assert response.status_code == 404
    assert EMAIL in response.json()["error"]["message"]
    assert record.end_user == "<EMAIL_1>"
    assert record.error_message is not None and EMAIL not in record.error_message
    assert "'<EMAIL_1>'" in record.error_message
    assert record.public_model == "<EMAIL_1>"  # stored as named, screened as its quote
    assert EMAIL not in str(record.to_row())


def test_messages_user_id_refused(gw: RunningGateway) -> None:
    """/v1/messages: ``metadata.user_id`` of a 403 is stored screened."""
    body = {"model": "claude", "max_tokens": 16, "metadata": {"user_id": EMAIL},
            "messages": [{"role": "user", "content": "hi"}]}
    response, record = post(gw, body, key=key(gw, models=["open"]), path="/v1/messages")
    assert response.status_code == 403
    assert record.end_user == "<EMAIL_1>"


def test_a_body_refused_before_it_parsed(gw: RunningGateway) -> None:
    """A 400 before the request parsed (an invalid field) records its ``user`` too, screened
    with the policy of the model it names."""
    response, record = post(gw, {**hello("redacted", user=EMAIL), "temperature": "hot"})
    assert response.status_code == 400
    assert (record.public_model, record.end_user) == ("redacted", "<EMAIL_1>")


def test_an_idle_policy_keeps_the_user(gw: RunningGateway) -> None:
    """Under a plain allow (nothing would have scanned the call) the refused call's end user
    is kept as sent: no screening where privacy has nothing to do."""
    response, record = post(gw, hello("open", user=EMAIL, metadata={"team": "search"}),
                            key=key(gw, models=["claude"]))
    assert response.status_code == 403
    assert (record.end_user, record.tags) == (EMAIL, {"team": "search"})


def test_a_refused_call_keeps_its_metadata_screened(gw: RunningGateway) -> None:
    """A refused call's ``metadata`` is stored as an answered call's is (as ``tags``): with
    found values replaced under a policy that scans (a 403, and a 400 past the gateway's ``n``
    limit after the model was found)."""
    metadata = {"contact": EMAIL, "ticket": "T-42"}
    response, record = post(gw, hello("redacted", metadata=metadata),
                            key=key(gw, models=["open"]))
    assert response.status_code == 403
    assert record.tags == {"contact": "<EMAIL_1>", "ticket": "T-42"}
    response, record = post(gw, hello("open", metadata=metadata, n=1000))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "integer_above_max_value"
    assert record.tags == metadata


@pytest.fixture
def presidio_gw(run_gateway: GatewayFactory, simulator: str, tmp_path: Path
                ) -> Iterator[RunningGateway]:
    pytest.importorskip("presidio_analyzer")
    pytest.importorskip("spacy")
    from tests.privacy.presidio_pipeline import save_pipeline
    from tests.privacy.test_presidio_gateway import config as presidio_config

    raw = presidio_config(simulator, save_pipeline(tmp_path / "p"))
    raw["privacy"]["action"] = "redact"
    with run_gateway(raw) as running:
        yield running


def test_a_presidio_policy_keeps_no_refused_user(presidio_gw: RunningGateway) -> None:
    """Under a policy that runs a Presidio model, which a refused call does not wait for, a
    refused call keeps no end user (a name only the model finds would be stored), and its
    error message is screened by the built-ins."""
    response, record = post(presidio_gw, hello(EMAIL, user="Ann Lee"))
    assert response.status_code == 404
    assert record.end_user is None
    assert record.error_message is not None and "'<EMAIL_1>'" in record.error_message


def test_a_template_refusal_runs_under_the_templates_model(run_gateway: GatewayFactory,
                                                           simulator: str) -> None:
    """A request that names no model, refused by a prompt template whose version supplies it
    (a variable of the wrong type, one the version does not declare): recorded under that
    model, and its user and error message screened with that model's redact policy, not the
    global allow."""
    raw = config(simulator)
    raw["privacy"] = {"action": "allow"}
    with run_gateway(raw) as gw:
        created = gw.http().post("/admin/prompts", json={"id": "t6p", "labels": ["production"],
            "version": {"model": "redacted",
                        "messages": [{"role": "user", "content": "{{ who }} {{ n }}"}],
                        "variables": {"who": {"type": "string"}, "n": {"type": "integer"}}}})
        assert created.status_code == 201, created.text
        response, record = post(gw, {"messages": [], "user": EMAIL, "prompt": {
            "id": "t6p", "variables": {"who": "x", "n": "notint"}}})
        assert response.status_code == 400, response.text
        assert (record.public_model, record.end_user) == ("redacted", "<EMAIL_1>")
        response, record = post(gw, {"messages": [], "prompt": {
            "id": "t6p", "variables": {"who": "x", "n": 1, EMAIL: 1}}})
        assert response.status_code == 400, response.text
        assert record.error_message is not None and EMAIL not in record.error_message
        assert "'<EMAIL_1>'" in record.error_message
