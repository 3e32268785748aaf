"""Public model names resolved to ordered targets, from the validated config."""

from app.routing.table import Route, RoutingTable

__all__ = ["Route", "RoutingTable"]
