"""The relational store: SQLAlchemy 2.0 models and engines (migrations: ``app/db/migrations``,
run by ``switchboard db upgrade`` or ``alembic upgrade head`` from the repo root)."""
