"""The key change log (``app.db.key_changes``) on both backends: the triggers log every update
and delete of a key or a team, by id, and nothing else; reads by the database's clock; pruning;
the migration taking it away and back."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.migrate import alembic_config, check_current
from app.db.models import ApiKey
from app.keys import KeyCreate, KeyStore, KeyUpdate, TeamCreate, TeamUpdate


async def logged(store: KeyStore) -> list[tuple[str | None, str | None]]:
    changes, _ = await store.changes_since(0.0)
    return [(c.key_id, c.team_id) for c in changes]


async def test_every_update_and_delete_is_logged_by_id(engine: AsyncEngine) -> None:
    """The store's updates, rotations, revocations and deletes, and a hand-written UPDATE,
    each log one row naming the key or the team; creating logs nothing; never the key."""
    store = KeyStore(engine)
    team = await store.create_team(TeamCreate(name="t"))
    record, key = await store.create_key(KeyCreate(name="k", team_id=team.id))
    assert await logged(store) == []
    await store.update_key(record.id, KeyUpdate(rpm=5))
    _, rotated = await store.rotate_key(record.id)
    await store.revoke_key(record.id)
    await store.update_team(team.id, TeamUpdate(tpm=1000))
    async with engine.begin() as conn:
        await conn.execute(update(ApiKey).where(ApiKey.id == record.id).values(name="x"))
    await store.delete_key(record.id)
    await store.delete_team(team.id)
    assert await logged(store) == ([(record.id, None)] * 3 + [(None, team.id)]
                                   + [(record.id, None)] * 2 + [(None, team.id)])
    async with engine.connect() as conn:
        dump = repr((await conn.execute(text("SELECT * FROM key_changes"))).all())
    assert key not in dump and rotated not in dump


async def changes_either_side(store: KeyStore) -> tuple[str, str, float]:
    """Two keys changed, one before and one after the database's clock read between them:
    their ids and that clock."""
    first, _ = await store.create_key(KeyCreate(name="a"))
    second, _ = await store.create_key(KeyCreate(name="b"))
    await store.update_key(first.id, KeyUpdate(rpm=1))
    (change,), now = await store.changes_since(0.0)
    while now <= change.at:  # the same tick of SQLite's millisecond clock: read it again
        _, now = await store.changes_since(None)
    await store.update_key(second.id, KeyUpdate(rpm=2))
    return first.id, second.id, now


async def test_changes_are_read_by_the_database_clock(engine: AsyncEngine) -> None:
    """``changes_since`` returns the database's clock, read before the rows; a change made
    after it has ``at`` at or past it, and a read from then on returns only that change."""
    store = KeyStore(engine)
    first, second, now = await changes_either_side(store)
    changes, later = await store.changes_since(now)
    assert [c.key_id for c in changes] == [second]
    assert now <= changes[0].at <= later
    everything, _ = await store.changes_since(0.0)
    assert [c.key_id for c in everything] == [first, second]
    assert everything[0].id < everything[1].id


async def test_prune_removes_only_older_changes(engine: AsyncEngine) -> None:
    store = KeyStore(engine)
    _, second, cut = await changes_either_side(store)
    assert await store.prune_changes(cut) == 1
    assert await logged(store) == [(second, None)]


def _migrate(connection: Connection, config: Config, direction: str, revision: str) -> None:
    config.attributes["connection"] = connection
    getattr(command, direction)(config, revision)


async def test_migration_down_and_up(engine: AsyncEngine) -> None:
    """0016's downgrade takes the log and its triggers away (keys can still change); the
    upgrade brings both back."""
    url = engine.url
    store = KeyStore(engine)
    record, _ = await store.create_key(KeyCreate(name="k"))
    async with engine.begin() as conn:
        await conn.run_sync(_migrate, alembic_config(url), "downgrade", "0015")
    await store.update_key(record.id, KeyUpdate(rpm=3))  # no trigger left to fail
    async with engine.begin() as conn:
        await conn.run_sync(_migrate, alembic_config(url), "upgrade", "head")
    await check_current(url)
    await store.update_key(record.id, KeyUpdate(rpm=4))
    assert await logged(store) == [(record.id, None)]
