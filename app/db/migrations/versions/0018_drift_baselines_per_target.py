"""Drift baselines per target: one row per public model, provider, upstream model and signal.

Until 0017 a baseline was kept per public model and provider, so two targets of one model on one
provider (two arms of an experiment, ``sim/gpt-4o-mini`` against ``sim/gpt-4o``) shared one,
captured from both their answers. Such a baseline cannot be split by target, nor told apart
from one that has a single target: the stored baselines are dropped, and every gateway captures
new ones, per target, from the answers that follow (``drift.baseline_size`` of them), as after
``switchboard drift baseline reset``.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0018"
down_revision: str | Sequence[str] | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# breaking: drift_baselines' primary key gained upstream_model (NOT NULL), which code before
# this revision does not write
compatible_from: str = "0018"

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _create(*, per_target: bool) -> None:
    keys = [sa.Column("model", sa.String(256), primary_key=True),
            sa.Column("provider", sa.String(128), primary_key=True)]
    if per_target:
        keys.append(sa.Column("upstream_model", sa.String(256), primary_key=True))
    op.create_table(
        "drift_baselines", *keys,
        sa.Column("signal", sa.String(32), primary_key=True),
        sa.Column("samples", sa.Integer, nullable=False),
        sa.Column("data", _JSON, nullable=False),
        sa.Column("captured_at", sa.DateTime(timezone=True), nullable=False),
    )


def upgrade() -> None:
    op.drop_table("drift_baselines")
    _create(per_target=True)


def downgrade() -> None:
    op.drop_table("drift_baselines")
    _create(per_target=False)
