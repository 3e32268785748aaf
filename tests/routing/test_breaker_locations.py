"""A circuit breaker belongs to a target where its provider points (``Router.swap``): a reload
that points a provider elsewhere starts its targets' breakers afresh, and the calls still running
on the old location report to the old ones; a provider that did not move keeps its breakers."""

from __future__ import annotations

from typing import Any

from app.config import GatewayConfig, parse_config
from app.metrics.families import Metrics
from app.metrics.recorder import Recorder
from app.providers.base import Target
from app.routing.router import Router
from app.routing.shared import location

TARGET = Target(provider="gpu", model="llama")
DEAD, FIXED = "http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"


def config(where: str | None = DEAD, *, cooldown_s: float = 60, **gpu: Any) -> GatewayConfig:
    """``chat`` on ``gpu`` at ``where`` (no ``gpu`` at all for ``None``) and on ``cpu``; two
    failures open a breaker for ``cooldown_s``."""
    providers: dict[str, Any] = {"cpu": {"type": "mock"}}
    targets = [{"provider": "cpu", "model": "mock-chat"}]
    if where is not None:
        providers["gpu"] = {"type": "openai", "base_url": where, "api_key": "sk-gpu", **gpu}
        targets.insert(0, {"provider": "gpu", "model": "llama"})
    return parse_config({"providers": providers, "models": {"chat": {"targets": targets}},
                         "breaker": {"failures": 2, "cooldown_s": cooldown_s}}, {})


def opened(router: Router, on: GatewayConfig) -> None:
    """Two calls running on ``on`` fail on ``TARGET``: its breaker there opens."""
    for _ in range(2):
        router.judge(TARGET, router.breaker(TARGET, on), failed=True)
    assert router.breaker(TARGET, on).state == "open"


def exported(metrics: Metrics) -> dict[str, float]:
    """``switchboard_target_state`` by provider."""
    return {s.labels["provider"]: s.value for family in metrics.registry.collect()
            if family.name == "switchboard_target_state" for s in family.samples}


def test_a_repointed_provider_starts_with_a_closed_breaker() -> None:
    """A reload pointing an open target's provider elsewhere: calls on the new config find its
    breaker closed, and it is shown so (it stayed open for the whole cooldown)."""
    before = config(DEAD)
    router = Router(before, backends={}, recorder=None)
    opened(router, before)
    after = config(FIXED)
    router.swap(after)
    fresh = router.breaker(TARGET, after)
    assert fresh.state == "closed" and not fresh.blocked() and fresh.location == FIXED
    assert router.breakers[("gpu", "llama")] is fresh


def test_failures_of_calls_on_the_old_location_stay_with_it() -> None:
    """Calls still running on the replaced config that fail after the reload open the old
    location's breaker (a half-open probe's failure included), never the new one's, and the
    target's exported state stays that of the new one."""
    metrics = Metrics()
    recorder = Recorder(metrics, models=["chat"], targets=[("gpu", "llama"), ("cpu", "mock-chat")])
    before, after = config(DEAD), config(FIXED)
    router = Router(before, backends={}, recorder=recorder)
    router.swap(after)
    opened(router, before)
    old = router.breaker(TARGET, before)
    assert old.location == DEAD and old.consecutive == 2
    new = router.breaker(TARGET, after)
    assert new.state == "closed" and new.consecutive == 0
    assert router.breakers[("gpu", "llama")] is new
    assert exported(metrics) == {"gpu": 0.0, "cpu": 0.0}


def test_a_provider_that_did_not_move_keeps_its_breaker() -> None:
    """A reload that changes a provider's other settings keeps its targets' breakers, state and
    count, and gives them its ``breaker:`` settings, which a call on the old config does not put
    back."""
    before = config(DEAD)
    router = Router(before, backends={}, recorder=None)
    opened(router, before)
    after = config(DEAD, cooldown_s=30, timeout_s=3)
    router.swap(after)
    kept = router.breaker(TARGET, after)
    assert kept is router.breaker(TARGET, before)
    assert kept.state == "open" and kept.blocked() and kept.cooldown_s == 60
    assert kept.config.cooldown_s == 30


def test_pointed_back_where_it_was_it_starts_afresh() -> None:
    """A provider pointed elsewhere and back by two reloads finds its breaker there closed (its
    location changed, twice): not the one it left open."""
    first, second, third = config(DEAD), config(FIXED), config(DEAD)
    router = Router(first, backends={}, recorder=None)
    opened(router, first)
    router.swap(second)
    router.swap(third)
    assert router.breaker(TARGET, third).state == "closed"
    assert router.breakers[("gpu", "llama")].state == "closed"


def test_a_reload_exports_the_repointed_targets_breaker_closed() -> None:
    """The repointed target's ``switchboard_target_state`` goes from open to closed at the
    reload (it stayed at open)."""
    metrics = Metrics()
    recorder = Recorder(metrics, models=["chat"], targets=[("gpu", "llama"), ("cpu", "mock-chat")])
    before = config(DEAD)
    router = Router(before, backends={}, recorder=recorder)
    opened(router, before)
    assert exported(metrics)["gpu"] == 2.0
    router.swap(config(FIXED))
    assert exported(metrics)["gpu"] == 0.0


def test_a_removed_provider_added_back_where_it_was_keeps_its_breaker() -> None:
    """A provider a reload removes and a later one adds back at the same location finds its
    breaker as it left it; added back elsewhere, closed."""
    first = config(DEAD)
    router = Router(first, backends={}, recorder=None)
    opened(router, first)
    router.swap(config(None))
    back = config(DEAD)
    router.swap(back)
    assert router.breaker(TARGET, back).state == "open"
    router.swap(config(None))
    elsewhere = config(FIXED)
    router.swap(elsewhere)
    assert router.breaker(TARGET, elsewhere).state == "closed"


def test_a_region_or_project_is_part_of_where_a_provider_points() -> None:
    """Bedrock's and SageMaker's ``region``, Vertex's ``project`` and ``location`` make another
    location (all of them were their provider's type: a move to another region kept the open
    breakers, and two deployments' providers in different regions shared theirs)."""
    def where(**provider: Any) -> str:
        raw = {"providers": {"p": provider},
               "models": {"m": {"targets": [{"provider": "p", "model": "x"}]}}}
        return location(parse_config(raw, {}), "p")

    aws = {"access_key_id": "AKIAEXAMPLEKEY1234", "secret_access_key": "s" * 40}
    for kind in ("bedrock", "sagemaker"):
        east = where(type=kind, region="us-east-1", **aws)
        assert east == where(type=kind, region="us-east-1", **aws)
        assert east != where(type=kind, region="eu-west-1", **aws)
        assert where(type=kind, region="us-east-1", base_url="http://vpce:443", **aws) != \
            where(type=kind, region="eu-west-1", base_url="http://vpce:443", **aws)
    for kind in ("vertex", "vertex_anthropic"):
        here = where(type=kind, project="a", location="us-central1")
        assert here == where(type=kind, project="a", location="us-central1")
        assert here != where(type=kind, project="b", location="us-central1")
        assert here != where(type=kind, project="a", location="europe-west4")
    openai = {"type": "openai", "base_url": "http://x/v1", "api_key": "k"}
    assert where(**openai) == "http://x/v1" == where(**openai, region="eu")  # a privacy tag
