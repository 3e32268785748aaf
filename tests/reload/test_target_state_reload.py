"""``switchboard_target_state`` follows live reloads: a target a reload removes loses its
series (it would otherwise stay, at 2 if its breaker was open, for as long as the process
runs), and one added back shows its breaker's state."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import SecretStr

from app.main import create_app
from app.metrics.families import Metrics
from app.metrics.recorder import Recorder
from app.settings import Settings
from tests.api.conftest import ListSink
from tests.servers import serve

MASTER = "sk-target-state-reload-4hQz"
ADMIN = {"Authorization": f"Bearer {MASTER}"}


def config(simulator: str, *, with_bad: bool) -> dict[str, Any]:
    """``chat`` on the mock provider, and with ``with_bad`` a model ``broken`` whose only
    target always answers 503 (one failure opens its breaker for a minute)."""
    raw: dict[str, Any] = {
        "providers": {"mock": {"type": "mock"}},
        "models": {"chat": {"targets": [{"provider": "mock", "model": "mock-chat"}]}},
        "breaker": {"failures": 1, "cooldown_s": 60},
        "retries": {"attempts": 0},
        "drift": {"embedding": {"sample_rate": 0}}}
    if with_bad:
        raw["providers"]["bad"] = {"type": "openai", "base_url": f"{simulator}/v1",
                                   "api_key": "sk-test-abcdefghijklmnop",
                                   "headers": {"x-return-error": "503"}}
        raw["models"]["broken"] = {"targets": [{"provider": "bad", "model": "gpt-4o-mini"}]}
    return raw


def states(url: str) -> dict[str, float]:
    """``switchboard_target_state`` by provider, as ``GET /metrics`` shows it."""
    text = httpx.get(f"{url}/metrics", headers=ADMIN).text
    return {m[1]: float(m[2]) for m in re.finditer(
        r'^switchboard_target_state\{provider="([^"]+)",upstream_model="[^"]+"\} (\S+)$',
        text, re.MULTILINE)}


@contextmanager
def serving(file: Path, raw: dict[str, Any]) -> Iterator[str]:
    """A gateway serving ``raw``, written to ``file`` (reloaded on request only), its call log
    beside it; its URL."""
    file.write_text(yaml.safe_dump(raw))
    settings = Settings(master_key=SecretStr(MASTER), config=file, config_poll_s=0,
                        database_url=f"sqlite+aiosqlite:///{file.parent / 'calls.db'}",
                        spool_dir=file.parent / "spool")
    with serve(create_app(settings, sink=ListSink(), strict_telemetry=True)) as url:
        yield url


def reload(url: str, file: Path, raw: dict[str, Any]) -> None:
    file.write_text(yaml.safe_dump(raw))
    answer = httpx.post(f"{url}/admin/config/reload", headers=ADMIN)
    assert answer.status_code == 200 and answer.json()["version"], answer.text


def test_a_reload_removes_the_series_of_the_targets_it_ends(tmp_path: Path,
                                                            simulator: str) -> None:
    """A reload that removes a target (its breaker open) removes its series; a reload that
    adds it back exports it again, at its breaker's state (still open)."""
    file = tmp_path / "gateway.yaml"
    with serving(file, config(simulator, with_bad=True)) as url:
        answer = httpx.post(f"{url}/v1/chat/completions", headers=ADMIN, timeout=30, json={
            "model": "broken", "messages": [{"role": "user", "content": "hi"}]})
        assert answer.status_code == 503, answer.text
        assert states(url) == {"mock": 0.0, "bad": 2.0}
        reload(url, file, config(simulator, with_bad=False))
        assert states(url) == {"mock": 0.0}
        reload(url, file, config(simulator, with_bad=True))
        assert states(url) == {"mock": 0.0, "bad": 2.0}


def test_a_removed_targets_breaker_adds_no_series() -> None:
    """A breaker change of a target no longer configured (a call of the replaced config still
    finishing) is not exported, so its series does not come back."""
    metrics = Metrics()
    recorder = Recorder(metrics, models=["chat"], targets=[("a", "m"), ("b", "m")])
    recorder.set_targets([("b", "m")])
    recorder.target_state("a", upstream_model="m", value=2)
    exported = {s.labels["provider"]: s.value for family in metrics.registry.collect()
                if family.name == "switchboard_target_state" for s in family.samples}
    assert exported == {"b": 0.0}


def test_with_workers_a_removed_target_stays_at_closed() -> None:
    """In multiprocess mode (``--workers``), where a series cannot be removed, a removed
    target's series is left at 0 (closed), never at the open state nothing will change."""
    metrics = Metrics(multiprocess=True)
    recorder = Recorder(metrics, models=["chat"], targets=[("a", "m"), ("b", "m")])
    recorder.target_state("a", upstream_model="m", value=2)
    recorder.set_targets([("b", "m")])
    exported = {s.labels["provider"]: s.value for family in metrics.registry.collect()
                if family.name == "switchboard_target_state" for s in family.samples}
    assert exported == {"a": 0.0, "b": 0.0}
