"""No call record stores a key of the gateway's own (a virtual key, the master key), wherever a
client put one: as ``model`` (the 404 quotes it), as ``x-request-id``, as ``user`` or in
``metadata``. The client's own answer still quotes what it sent."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from app.calllog import CallRecord
from app.keys.model import KEY_PREFIX, new_key
from app.scrub import REDACTED, VIRTUAL_KEY, VIRTUAL_REDACTED, OwnKeys
from tests.api.conftest import MASTER_KEY, RunningGateway


def made_key(gateway: RunningGateway) -> str:
    response = gateway.http().post("/admin/keys", json={"name": "own"})
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    return key


def stored(record: CallRecord) -> str:
    """Everything a sink stores of ``record``."""
    return str(record.to_row())


def one_record(gateway: RunningGateway, marker: str) -> CallRecord:
    found = [r for r in gateway.sink.records if marker in str(r.to_row())]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("which", ["virtual", "master"])
def test_a_key_sent_as_model_is_not_stored(gateway: RunningGateway, which: str) -> None:
    """404 model_not_found quoting a key: the stored error message and ``public_model`` (a
    model no route serves is stored as named) hold ``[redacted]``; the client's answer quotes
    the model it sent."""
    key = made_key(gateway)
    sent = key if which == "virtual" else MASTER_KEY
    marker = uuid.uuid4().hex
    response = gateway.http().post(
        "/v1/chat/completions", headers={"Authorization": f"Bearer {key}", "x-request-id": marker},
        json={"model": sent, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 404
    assert sent in response.json()["error"]["message"]
    record = gateway.sink.by_id(marker)
    assert sent not in stored(record)
    assert record.error_message is not None
    shown = VIRTUAL_REDACTED if which == "virtual" else REDACTED
    assert f"'{shown}'" in record.error_message and record.public_model == shown


def test_a_key_as_request_id_user_or_metadata_is_not_stored(gateway: RunningGateway) -> None:
    """An answered call whose ``x-request-id`` is the master key and whose ``user`` and
    ``metadata`` hold a virtual key: the record stores none of them."""
    key, marker = made_key(gateway), uuid.uuid4().hex
    body: dict[str, Any] = {"model": "chat", "user": key, "metadata": {marker: f"key {key}"},
                            "messages": [{"role": "user", "content": "hi"}]}
    response = gateway.http().post("/v1/chat/completions", json=body,
                                   headers={"x-request-id": MASTER_KEY})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == MASTER_KEY  # the client's own, echoed
    record = one_record(gateway, marker)
    assert MASTER_KEY not in stored(record) and key not in stored(record)
    assert (record.request_id, record.end_user) == (REDACTED, VIRTUAL_REDACTED)
    assert record.tags == {marker: f"key {VIRTUAL_REDACTED}"}


def test_own_keys_scrub() -> None:
    """Every virtual key's shape (known or not) and the master key (whole, before the shape)
    are replaced; other text, and a master key too short to scrub, are left."""
    master = KEY_PREFIX + "master-0123456789"
    own = OwnKeys([master, "abc"])
    assert own(f"a {new_key()}, b {master}; abc") == f"a {VIRTUAL_REDACTED}, b {REDACTED}; abc"
    text = "The model 'gpt-4o' does not exist"
    assert own(text) is text


def test_a_master_key_cut_short_is_scrubbed() -> None:
    """The master key cut short (a 404 quotes 200 characters of the model) goes from its
    first 8 characters on, as far as it runs, the text after it kept; fewer than 8 of its
    characters are left."""
    master = "sk-MasterKeyT28cXyZ-0123456789abcdef"
    own = OwnKeys([master])
    assert own(f"The model 'x{master[:-1]}' does not exist") == \
        f"The model 'x{REDACTED}' does not exist"
    assert own(f"a {master[:12]}, b {master[:9]}") == f"a {REDACTED}, b {REDACTED}"
    assert own("ends with " + master[:5]) == "ends with " + master[:5]


def test_a_master_key_past_the_quoted_models_cut_is_not_stored(gateway: RunningGateway
                                                                ) -> None:
    """The master key placed where the 404's quote of the model is cut: the stored error
    message holds none of it."""
    marker = uuid.uuid4().hex
    model = "m" * 190 + MASTER_KEY
    response = gateway.http().post(
        "/v1/chat/completions", headers={"x-request-id": marker},
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 404
    record = gateway.sink.by_id(marker)
    assert record.error_message is not None and record.error_message.count(REDACTED) == 1
    assert MASTER_KEY[:8] not in stored(record)


def test_the_virtual_key_shape_is_the_key_models() -> None:
    """``VIRTUAL_KEY`` matches a key ``app.keys.model`` makes, whole."""
    key = new_key()
    match = VIRTUAL_KEY.fullmatch(key)
    assert match is not None and key.startswith(KEY_PREFIX)
