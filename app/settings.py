"""Process settings from the environment (prefix ``SWITCHBOARD_``).

The only module that reads the environment."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class UnsafeSettings(ValueError):
    """The settings would expose the gateway unsafely; the message says how to fix it."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_", extra="ignore", frozen=True,
                                      populate_by_name=True)

    config: Path | None = None
    """YAML config path; unset: the embedded default (mock models plus keyed providers)."""
    database_url: str = "sqlite+aiosqlite:///switchboard.db"
    """The call log's database: Postgres in production, a SQLite file by default."""
    redis_url: str | None = None
    """Redis for the call-log spool, live tail and counters; unset: local file spool only."""
    call_log: bool = True
    """Record every call (database, Redis, spool). Off only for benchmarks and debugging: then
    records go to the ``switchboard.calls`` debug log and nowhere else."""
    metrics: bool = True
    """Prometheus metrics and drift signals. Off only for benchmarks (the cost of metrics is
    measured against it): then ``/metrics`` answers 404."""
    spool_dir: Path = Path("switchboard-spool")
    """Where call records wait when neither the database nor Redis can take them."""
    master_key: SecretStr | None = None
    metrics_key: SecretStr | None = None
    """A key that may read ``GET /metrics`` and nothing else (give it to Prometheus). Unset:
    ``/metrics`` takes the master key; with no key at all it is open (loopback-only mode)."""
    metrics_dir: Path | None = Field(default=None, validation_alias="PROMETHEUS_MULTIPROC_DIR")
    """Where worker processes keep their metric values (prometheus-client's multiprocess mode).
    ``switchboard serve --workers N`` sets it; it must be set before any worker starts."""
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    workers: Annotated[int, Field(ge=1)] = 1
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    def check_exposure(self) -> None:
        """Refuse to serve without a master key on anything but a loopback address."""
        if self.master_key is None and not is_loopback(self.host):
            raise UnsafeSettings(
                f"refusing to serve on {self.host} without SWITCHBOARD_MASTER_KEY: anyone who "
                "can reach the port could spend your provider credit. Set a master key, or bind "
                "to 127.0.0.1."
            )
        for name, key in (("MASTER_KEY", self.master_key), ("METRICS_KEY", self.metrics_key)):
            if key is not None and len(key.get_secret_value()) < 16:
                raise UnsafeSettings(f"SWITCHBOARD_{name} must be at least 16 characters")


def environment() -> Mapping[str, str]:
    """The process environment, for ``${ENV}`` references in the config and provider keys."""
    return os.environ
