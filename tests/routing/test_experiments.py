"""Experiment assignment (``app.routing.experiments``): weights and stickiness."""

from __future__ import annotations

from collections import Counter

from app.config import parse_config
from app.routing import RoutingTable


def table(**weights: float) -> RoutingTable:
    return RoutingTable(parse_config({
        "providers": {"a": {"type": "mock"}, "b": {"type": "mock"}},
        "models": {"chat": {"targets": [{"provider": "a", "model": "m"}]}},
        "experiments": {"ab": {"model": "chat", "variants": {
            name: {"weight": w, "targets": [{"provider": name[0], "model": "m"}]}
            for name, w in weights.items()}}}}, {}))


def test_ten_thousand_calls_from_two_thousand_users_split_by_weight_and_stick() -> None:
    experiment = table(a_control=70, b_candidate=30).experiment_of("chat")
    assert experiment is not None
    seen: dict[str, set[str]] = {}
    share: Counter[str] = Counter()
    for call in range(10_000):
        user = f"user-{call % 2000}"
        variant = experiment.assign(f"user:{user}")
        seen.setdefault(user, set()).add(variant.name)
        share[variant.name] += 1
    assert all(len(names) == 1 for names in seen.values())
    assert abs(share["a_control"] / 10_000 - 0.70) < 0.02
    chosen = experiment.assign("user:someone")
    assert chosen.route.targets[0].provider == chosen.name[0]


def test_models_without_an_experiment_have_none() -> None:
    assert table(a_x=1, b_y=1).experiment_of("other") is None
