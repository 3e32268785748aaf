"""JPEG images labelled ``image/jpg`` (as many clients write them) reach Gemini and Vertex as
``image/jpeg``, the name Google takes, through a running gateway against the simulator."""

# The gateway fixture lives in tests/api/conftest.py, outside this directory: imported here so
# pytest finds it, and then named by each test's parameter (which ruff reads as a redefinition).
# ruff: noqa: F811

from __future__ import annotations

import httpx
import pytest

from app.simulator.gemini import API_KEY
from tests.api.conftest import (  # noqa: F401 - run_gateway is a fixture, used by name
    GatewayFactory,
    run_gateway,
)
from tests.providers.test_gemini_gateway import (  # noqa: F401 - a fixture, used by name
    config,
    last_request,
    service_account_key,
)

JPEG = "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAEBAQ=="


@pytest.mark.parametrize("kind", ["gemini", "vertex"])
@pytest.mark.parametrize("label", ["image/jpg", "image/JPG", "image/pjpeg"])
def test_jpg_label_is_sent_as_image_jpeg(run_gateway: GatewayFactory, simulator: str,
                                         service_account_key: str, kind: str,
                                         label: str) -> None:
    """A ``data:image/jpg`` URL is sent as ``mimeType: image/jpeg`` and answered."""
    with run_gateway(config(simulator, kind, service_account_key)) as gw:
        reply = gw.client().chat.completions.create(model="chat", messages=[{
            "role": "user", "content": [
                {"type": "text", "text": "What is it?"},
                {"type": "image_url", "image_url": {"url": f"data:{label};base64,{JPEG}"}}]}])
        sent = last_request(simulator)["body"]
    assert reply.choices[0].message.content
    assert sent["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/jpeg",
                                                              "data": JPEG}}


def test_simulator_refuses_image_types_google_does_not_take(simulator: str) -> None:
    """The simulator, as Gemini, answers 400 "Unsupported MIME type" for ``image/jpg``."""
    reply = httpx.post(f"{simulator}/gemini/v1beta/models/gemini-2.5-flash:generateContent",
                       headers={"x-goog-api-key": API_KEY}, json={"contents": [{
                           "role": "user", "parts": [
                               {"inlineData": {"mimeType": "image/jpg", "data": JPEG}}]}]})
    assert reply.status_code == 400
    assert reply.json()["error"]["message"] == "Unsupported MIME type: image/jpg"
