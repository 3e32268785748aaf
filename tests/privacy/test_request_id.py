# ruff: noqa: F811  (pytest passes the imported fixtures by parameter name)
"""The client's ``x-request-id`` is stored as the call's ``request_id`` with the values its
privacy policy finds in it replaced by their placeholders, as the end user is (answered and
refused calls alike: ``Privacy.on_end``, ``Pipeline.seal``); the client is still answered the
id it sent."""

from __future__ import annotations

from typing import Any

import httpx

from app.calllog import CallRecord
from tests.api.conftest import (  # noqa: F401  (run_gateway: the fixture, used by name)
    RunningGateway,
    run_gateway,
)
from tests.privacy.test_refused_records import gw, hello, key  # noqa: F401  (gw: the fixture)

CARD = "4111-1111-1111-1111"


def send(gw: RunningGateway, body: dict[str, Any], request_id: str, *,
         key: str | None = None) -> tuple[httpx.Response, CallRecord]:
    """``body`` posted with ``x-request-id: request_id``; the answer and its call's record."""
    headers = {"x-request-id": request_id}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    response = gw.http().post("/v1/chat/completions", json=body, headers=headers)
    call_id = response.headers["x-switchboard-call-id"]
    return response, next(r for r in gw.sink.records if r.id == call_id)


def test_a_value_found_in_the_body_and_the_id(gw: RunningGateway) -> None:
    """Redact: the card in the body and the same card as the request id share one
    placeholder in the record; the answer echoes the id as sent."""
    response, record = send(gw, {"model": "redacted", "messages": [
        {"role": "user", "content": f"card {CARD}"}]}, CARD)
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == CARD
    assert record.privacy_entities == {"CREDIT_CARD": 1}
    assert record.request_id == "<CREDIT_CARD_1>"
    assert CARD not in str(record.to_row())


def test_a_value_only_in_the_id(gw: RunningGateway) -> None:
    """A clean body, a card number and an IP address in the request id: the scan counts
    nothing (the id is never sent), and the id is stored screened."""
    request_id = f"order.{CARD}:10.1.2.3"
    response, record = send(gw, hello("redacted"), request_id)
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == request_id
    assert record.privacy_action == "none"
    assert record.request_id == "order.<CREDIT_CARD_1>:<IP_ADDRESS_1>"


def test_a_blocked_call_answers_its_own_id(gw: RunningGateway) -> None:
    """Block: the 400 (built after the record is sealed) still echoes the id as sent."""
    response, record = send(gw, {"model": "blocked", "messages": [
        {"role": "user", "content": f"card {CARD}"}]}, CARD)
    assert response.status_code == 400, response.text
    assert response.headers["x-request-id"] == CARD
    assert record.request_id == "<CREDIT_CARD_1>"


def test_a_call_refused_before_the_scan(gw: RunningGateway) -> None:
    """A key's 403 before the privacy stage: the id is screened with the model's policy when
    the record is sealed."""
    response, record = send(gw, hello("redacted"), CARD, key=key(gw, models=["open"]))
    assert response.status_code == 403, response.text
    assert response.headers["x-request-id"] == CARD
    assert record.request_id == "<CREDIT_CARD_1>"


def test_an_idle_policy_keeps_the_id(gw: RunningGateway) -> None:
    """Under a plain allow nothing is scanned: the id is stored as sent."""
    response, record = send(gw, hello("open"), CARD)
    assert response.status_code == 200, response.text
    assert record.request_id == CARD
