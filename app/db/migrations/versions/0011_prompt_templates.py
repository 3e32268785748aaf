"""Versioned prompt templates (``app.prompts``) and the prompt version of every call.

Tables ``prompt_templates``, ``prompt_versions`` (immutable; primary key ``(template_id,
number)``), ``prompt_labels`` (where each label points now) and ``prompt_label_moves`` (every
move, for history and rollback): plain tables on Postgres and SQLite (a few rows per template).
``calls.prompt_id`` and ``calls.prompt_version`` say which template version a call rendered
(NULL for calls without one and rows stored before this revision).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# additive: new nullable columns, tables, indexes or triggers; older code runs on it
compatible_from: str = "0001"

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("calls", sa.Column("prompt_id", sa.String(128)))
    op.add_column("calls", sa.Column("prompt_version", sa.Integer()))
    op.create_index("ix_calls_prompt_id_created_at", "calls", ["prompt_id", "created_at"])
    op.create_table(
        "prompt_templates",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("created_at", _WHEN, nullable=False),
    )
    op.create_table(
        "prompt_versions",
        sa.Column("template_id", sa.String(128), sa.ForeignKey("prompt_templates.id"),
                  primary_key=True),
        sa.Column("number", sa.Integer, primary_key=True),
        sa.Column("messages", _JSON, nullable=False),
        sa.Column("variables", _JSON, nullable=False),
        sa.Column("model", sa.String(256)),
        sa.Column("params", _JSON),
        sa.Column("author", sa.String(128)),
        sa.Column("note", sa.Text()),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
    )
    op.create_table(
        "prompt_labels",
        sa.Column("template_id", sa.String(128), sa.ForeignKey("prompt_templates.id"),
                  primary_key=True),
        sa.Column("label", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", _WHEN, nullable=False),
    )
    op.create_table(
        "prompt_label_moves",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("template_id", sa.String(128), sa.ForeignKey("prompt_templates.id"),
                  nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("from_version", sa.Integer),
        sa.Column("to_version", sa.Integer, nullable=False),
        sa.Column("rollback", sa.Boolean, nullable=False),
        sa.Column("moved_at", _WHEN, nullable=False),
    )
    op.create_index("ix_prompt_label_moves_template_label", "prompt_label_moves",
                    ["template_id", "label"])


def downgrade() -> None:
    op.drop_index("ix_prompt_label_moves_template_label", table_name="prompt_label_moves")
    op.drop_table("prompt_label_moves")
    op.drop_table("prompt_labels")
    op.drop_table("prompt_versions")
    op.drop_table("prompt_templates")
    op.drop_index("ix_calls_prompt_id_created_at", table_name="calls")
    op.drop_column("calls", "prompt_version")
    op.drop_column("calls", "prompt_id")
