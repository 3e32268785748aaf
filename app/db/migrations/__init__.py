"""Alembic migrations for the call log, shipped inside the package so that ``switchboard db
upgrade`` works from an installed wheel. ``env.py`` is Alembic's entry point; the logic is in
``runner``. The repository root's ``alembic.ini`` points here for developers
(``alembic upgrade head``, ``alembic revision -m ...``)."""
