"""Alembic's entry point (run by Alembic, never imported): see ``app.db.migrations.runner``."""

from app.db.migrations.runner import run_migrations

run_migrations()
