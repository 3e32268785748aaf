"""The relational store: SQLAlchemy 2.0 models and engines (migrations live in ``alembic/``)."""
