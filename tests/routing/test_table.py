"""The routing table (``app.routing.table``): what ``/v1/models`` is built from."""

from __future__ import annotations

from typing import Any

from app.config import GatewayConfig, parse_config
from app.routing import RoutingTable


def config(*models: str) -> GatewayConfig:
    raw: dict[str, Any] = {"providers": {"a": {"type": "mock"}},
                           "models": {m: {"targets": [{"provider": "a", "model": "m"}]}
                                      for m in models}}
    return parse_config(raw, {})


def test_a_reload_keeps_the_created_time_of_the_models_still_served() -> None:
    """A model the replaced table served keeps its ``created``; a model the reload adds gets
    the reload's time."""
    first = RoutingTable(config("chat", "old"), created=1_000)
    second = RoutingTable(config("chat", "new"), created=2_000, previous=first)
    assert second.resolve("chat").created == 1_000
    assert second.resolve("new").created == 2_000
    third = RoutingTable(config("chat", "new", "old"), created=3_000, previous=second)
    assert [third.resolve(m).created for m in ("chat", "new", "old")] == [1_000, 2_000, 3_000]
