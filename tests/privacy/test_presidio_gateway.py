# ruff: noqa: F811  (pytest passes the imported run_gateway fixture by parameter name)
"""End to end with the Presidio extra: a running gateway whose ``privacy.presidio`` names a
spaCy pipeline saved by the test (``presidio_pipeline``), against the simulator, which shows
what it received: names and places never reach the third party under redact and block, and the
answer gets them back; and a reload to a pipeline that cannot load is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

pytest.importorskip("presidio_analyzer")
pytest.importorskip("spacy")

from app.calllog import LogSink
from app.config import load_config
from app.gateway import Gateway
from app.pipeline import Pipeline
from app.pricing import PriceBook
from app.providers import build_provider
from app.providers.http import new_session
from app.reload import ConfigReloader
from app.stages.privacy import Privacy
from tests.api.conftest import (  # noqa: F401  (run_gateway: the fixture, used by name)
    GatewayFactory,
    RunningGateway,
    run_gateway,
)
from tests.privacy.presidio_pipeline import save_pipeline
from tests.privacy.test_gateway import Upstream

NAME, STREET, TOWN, EMAIL = "Ann Lee", "742 Evergreen Terrace", "Springfield", "ann@corp.example"
PLANTED = (NAME, STREET, TOWN, EMAIL)


def config(simulator: str, pipeline: Path) -> dict[str, Any]:
    api = {"type": "openai", "base_url": simulator + "/v1", "api_key": "sk-third",
           "headers": {"X-Sim-Completion-Tokens": "64"}}  # room for the whole echo
    return {
        "providers": {"api": api},
        "models": {
            "redacted": {"targets": [{"provider": "api", "model": "gpt-4o-mini"}],
                         "privacy": {"action": "redact"}},
            "blocked": {"targets": [{"provider": "api", "model": "gpt-4o-mini"}],
                        "privacy": {"action": "block", "entities": ["PERSON"]}},
        },
        "privacy": {"presidio": {"model": str(pipeline)}},
        "calllog": {"capture_bodies": True},
        "drift": {"embedding": {"sample_rate": 0}},
        "retries": {"attempts": 0},
    }


@pytest.fixture
def gw(run_gateway: GatewayFactory, simulator: str, tmp_path: Path
       ) -> Iterator[RunningGateway]:
    with run_gateway(config(simulator, save_pipeline(tmp_path / "pipeline"))) as running:
        yield running


@pytest.fixture
def upstream(simulator: str) -> Upstream:
    return Upstream(simulator)


def never_saw(upstream: Upstream) -> None:
    for entry in upstream.received():
        assert not any(value in str(entry["body"]) for value in PLANTED), entry["body"]


def test_redact_names_and_places(gw: RunningGateway, upstream: Upstream) -> None:
    """The upstream gets placeholders for the name, the street and the town (and the
    built-ins' email); the answer has them back; the record counts them and its captured
    bodies hold none of them."""
    content = f"{NAME} of {STREET}, {TOWN} ({EMAIL}) asks {upstream.marker}"
    answer = gw.client().chat.completions.create(
        model="redacted", messages=[{"role": "user", "content": content}],
        extra_headers={"x-request-id": upstream.marker})
    seen = upstream.received()
    assert len(seen) == 1
    never_saw(upstream)
    assert seen[0]["body"]["messages"][0]["content"] == \
        f"<PERSON_1> of <LOCATION_1>, <LOCATION_2> (<EMAIL_1>) asks {upstream.marker}"
    assert (answer.choices[0].message.content or "").startswith(
        f"Simulated reply to: {content}")
    record = gw.sink.by_id(upstream.marker)
    assert record.privacy_action == "redact"
    assert record.privacy_entities == {"PERSON": 1, "LOCATION": 2, "EMAIL": 1}
    for stored in (record.request_body, record.response_body):
        assert not any(value in str(stored) for value in PLANTED), stored


def test_redact_names_streamed(gw: RunningGateway, upstream: Upstream) -> None:
    """Streamed: the name is restored in the client's text, never a placeholder."""
    stream = gw.client().chat.completions.create(
        model="redacted", stream=True,
        messages=[{"role": "user", "content": f"{NAME} in {TOWN} {upstream.marker}"}])
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    never_saw(upstream)
    assert upstream.received()[0]["body"]["messages"][0]["content"].startswith(
        "<PERSON_1> in <LOCATION_1>")
    assert text.startswith(f"Simulated reply to: {NAME} in {TOWN}") and "<" not in text


def test_block_names(gw: RunningGateway, upstream: Upstream) -> None:
    """A policy whose entities are [PERSON] blocks a name (400 naming the type, not the
    value), and lets a place through."""
    client = gw.client()
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="blocked", messages=[{"role": "user", "content": f"{NAME} {upstream.marker}"}])
    error = caught.value.body
    assert isinstance(error, dict) and error["code"] == "sensitive_data_blocked"
    assert "PERSON (1)" in error["message"] and NAME not in error["message"]
    assert upstream.received() == []
    client.chat.completions.create(
        model="blocked", messages=[{"role": "user", "content": f"{TOWN} {upstream.marker}"}])
    assert len(upstream.received()) == 1


@pytest.fixture
async def reloader(tmp_path: Path) -> AsyncIterator[ConfigReloader]:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(_reloadable(save_pipeline(tmp_path / "pipeline"))))
    loaded = load_config(path, {})
    session = new_session()
    pipeline = Pipeline([Privacy()])
    await pipeline.prepare(loaded)
    gateway = Gateway(config=loaded, pipeline=pipeline, sink=LogSink(), prices=PriceBook({}),
                      providers={n: build_provider(c, session)
                                 for n, c in loaded.providers.items()})
    made = ConfigReloader(gateway, path, session=session, metrics=None, poll_s=0)
    yield made
    await gateway.aclose()
    await session.close()


def _reloadable(pipeline: Path, **presidio: Any) -> dict[str, Any]:
    return {"providers": {"m": {"type": "mock"}},
            "models": {"chat": {"targets": [{"provider": "m", "model": "mock-chat"}]}},
            "privacy": {"presidio": {"model": str(pipeline), **presidio}}}


async def test_a_reload_to_a_pipeline_that_cannot_load_is_refused(
        reloader: ConfigReloader, tmp_path: Path) -> None:
    """A saved pipeline whose files are broken passes the config's check (it is there) but
    fails to load: the reload is refused saying why, and the old config keeps serving; a
    working one is then swapped in."""
    serving = reloader.gateway.snapshot
    broken = save_pipeline(tmp_path / "broken")
    (broken / "config.cfg").write_text("[nlp]\nlang = \"xx-not-a-language\"\n")
    reloader.path.write_text(yaml.safe_dump(_reloadable(broken)))
    refused = await reloader.reload(reason="test")
    assert not refused.changed and refused.error is not None
    assert "privacy.presidio" in refused.error and "cannot load it" in refused.error
    assert reloader.gateway.snapshot is serving
    reloader.path.write_text(yaml.safe_dump(
        _reloadable(tmp_path / "pipeline", entities=["PERSON"])))
    assert (await reloader.reload(reason="test")).changed
