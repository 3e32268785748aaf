"""The running-gateway fixtures of ``tests/api`` (``run_gateway``), for the prompt tests."""

from tests.api.conftest import run_gateway

__all__ = ["run_gateway"]
