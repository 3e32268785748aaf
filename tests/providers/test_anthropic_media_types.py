# ruff: noqa: F811  (pytest passes the imported run_gateway fixture by parameter name)
"""JPEG images labelled ``image/jpg`` (as many clients write them) reach Anthropic as
``image/jpeg``, the name it takes, through a running gateway against the simulator (the
gateway refused them with a 400 of its own; sent as they were, Anthropic refuses them)."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import (  # noqa: F401  (run_gateway: the fixture, used by name)
    GatewayFactory,
    run_gateway,
)
from tests.providers.test_anthropic_gateway import config

JPEG = "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAEBAQ=="


@pytest.mark.parametrize("label", ["image/jpg", "image/JPEG", "image/pjpeg"])
def test_jpg_label_is_sent_as_image_jpeg(run_gateway: GatewayFactory, simulator: str,
                                         label: str) -> None:
    with run_gateway(config(simulator)) as gw:
        reply = gw.client().chat.completions.create(model="claude", messages=[{
            "role": "user", "content": [
                {"type": "text", "text": "What is it?"},
                {"type": "image_url", "image_url": {"url": f"data:{label};base64,{JPEG}"}}]}])
        (sent,) = httpx.get(f"{simulator}/_sim/requests?limit=1").json()
    assert reply.choices[0].message.content
    assert sent["body"]["messages"][0]["content"][1] == {
        "type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": JPEG}}


def test_simulator_refuses_image_types_anthropic_does_not_take(simulator: str) -> None:
    headers = {"x-api-key": "sk-ant-secret", "anthropic-version": "2023-06-01"}
    reply = httpx.post(f"{simulator}/v1/messages", headers=headers, json={
        "model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpg",
                                         "data": JPEG}}]}]})
    assert reply.status_code == 400, reply.text
    assert "media_type" in reply.json()["error"]["message"]
