"""Drift baselines: what a model's answers looked like when it was known good.

A baseline is captured from the first answers after start-up (or after a reset), per public model,
target (provider and upstream model: two targets of one model on one provider, two arms of an
experiment say, are two baselines) and signal (``length``: completion-length bin counts and
rates; ``embedding``: a centroid), then saved so that restarts and other workers compare against
the same one. The first saved baseline wins: every worker adopts what the store holds on its
next sync. Deleting it (``switchboard drift baseline reset MODEL``) makes every worker capture a
new one: a reset also stores a marker (signal ``RESET``, provider ``""`` for all of the model's),
whose time tells every worker to restart a capture still in progress, whose answers came before
the reset (a capture not saved yet leaves nothing in the store for the reset to delete).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import delete, select
from sqlalchemy import insert as plain_insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.models import DriftBaseline

Target = tuple[str, str, str]
"""(public model, provider, upstream model): a public model's target, what drift is kept per."""
Key = tuple[str, str, str, str]
"""(public model, provider, upstream model, signal)."""
RESET = "reset"
"""The signal of a reset marker: (model, provider or ``""`` for all, ``""``, ``RESET``), its
``captured_at`` the time of the last reset. Not a baseline: ``baselines`` leaves it out."""


def reset_marker(model: str, provider: str | None) -> Baseline:
    """The marker a reset of ``model`` (one provider's, or all) leaves in the store."""
    return Baseline(model=model, provider=provider or "", signal=RESET, samples=0, data={})


def baselines(stored: dict[Key, Baseline]) -> dict[Key, Baseline]:
    """``stored`` without the reset markers."""
    return {key: b for key, b in stored.items() if key[3] != RESET}


@dataclass(slots=True)
class Baseline:
    model: str
    provider: str
    signal: str
    samples: int
    data: dict[str, Any]
    """Signal-specific and JSON-safe (lists of numbers, floats)."""
    captured_at: float = field(default_factory=time.time)
    upstream_model: str = ""
    """The model name the provider is asked for (the target's ``model``)."""

    @property
    def key(self) -> Key:
        return (self.model, self.provider, self.upstream_model, self.signal)


class BaselineStore(Protocol):
    """Where baselines persist (the database; in memory when the call log is off)."""

    async def load_all(self) -> dict[Key, Baseline]: ...

    async def save_if_absent(self, baseline: Baseline) -> None:
        """Store ``baseline`` unless one with its key exists (then keep the stored one)."""

    async def delete(self, model: str, provider: str | None = None) -> int:
        """Forget the baselines of ``model`` (of one provider, or all) and store a reset marker
        (``reset_marker``); returns how many baselines were forgotten."""


class MemoryBaselines:
    """A ``BaselineStore`` for one process (no database): lost on restart."""

    def __init__(self) -> None:
        self._rows: dict[Key, Baseline] = {}

    async def load_all(self) -> dict[Key, Baseline]:
        return dict(self._rows)

    async def save_if_absent(self, baseline: Baseline) -> None:
        self._rows.setdefault(baseline.key, baseline)

    async def delete(self, model: str, provider: str | None = None) -> int:
        gone = [k for k in self._rows if k[0] == model and k[3] != RESET
                and (provider is None or k[1] == provider)]
        for key in gone:
            del self._rows[key]
        marker = reset_marker(model, provider)
        self._rows[marker.key] = marker
        return len(gone)


class DatabaseBaselines:
    """A ``BaselineStore`` in the ``drift_baselines`` table (Postgres or the embedded SQLite)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def load_all(self) -> dict[Key, Baseline]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(*DriftBaseline.__table__.columns))).all()
        return {(r.model, r.provider, r.upstream_model, r.signal): Baseline(
            model=r.model, provider=r.provider, upstream_model=r.upstream_model,
            signal=r.signal, samples=r.samples, data=r.data,
            captured_at=r.captured_at.timestamp()) for r in rows}

    async def save_if_absent(self, baseline: Baseline) -> None:
        dialect = self._engine.dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        statement = insert(DriftBaseline).values(
            model=baseline.model, provider=baseline.provider,
            upstream_model=baseline.upstream_model, signal=baseline.signal,
            samples=baseline.samples, data=baseline.data,
            captured_at=datetime.fromtimestamp(baseline.captured_at, UTC),
        ).on_conflict_do_nothing()
        async with self._engine.begin() as conn:
            await conn.execute(statement)

    async def delete(self, model: str, provider: str | None = None) -> int:
        statement = delete(DriftBaseline).where(DriftBaseline.model == model,
                                                DriftBaseline.signal != RESET)
        if provider is not None:
            statement = statement.where(DriftBaseline.provider == provider)
        marker = reset_marker(model, provider)
        async with self._engine.begin() as conn:
            result = await conn.execute(statement)
            await conn.execute(delete(DriftBaseline).where(
                DriftBaseline.model == marker.model, DriftBaseline.provider == marker.provider,
                DriftBaseline.upstream_model == "", DriftBaseline.signal == RESET))
            await conn.execute(plain_insert(DriftBaseline).values(
                model=marker.model, provider=marker.provider, upstream_model="",
                signal=RESET, samples=0, data={},
                captured_at=datetime.fromtimestamp(marker.captured_at, UTC)))
        return int(result.rowcount or 0)
