"""``KeyStore`` on SQLite and Postgres: key and team lifecycle, hashing, lookups and conflicts."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app import errors
from app.db.engine import DATABASE_ERRORS, make_engine
from app.db.models import ApiKey, Team
from app.keys import KeyCreate, KeyStore, KeyUpdate, TeamCreate, TeamUpdate, hash_key
from app.keys.model import PREFIX_CHARS, parse
from app.times import iso
from tests.servers import free_port


@pytest.fixture
def store(empty_keys_engine: AsyncEngine) -> KeyStore:
    """A store on a migrated database with no keys or teams (SQLite file or Postgres)."""
    return KeyStore(empty_keys_engine)


async def dump(engine: AsyncEngine) -> str:
    """Every value of every row of both tables, as one string."""
    async with engine.connect() as conn:
        keys = (await conn.execute(select(ApiKey.__table__))).all()
        teams = (await conn.execute(select(Team.__table__))).all()
    return repr(keys) + repr(teams)


async def test_created_key_is_stored_only_as_its_hash(store: KeyStore) -> None:
    """The plaintext is returned once; the database holds its SHA-256 and prefix, never it."""
    record, key = await store.create_key(KeyCreate(name="ci"))
    assert key.startswith("sk-sb-") and len(key) >= 6 + 43
    assert record.prefix == key[:PREFIX_CHARS] and record.id.startswith("key_")
    table = await dump(store.engine)
    assert hash_key(key) in table
    assert key not in table and key[PREFIX_CHARS:] not in table


async def test_find_by_hash_returns_the_key_and_its_team(store: KeyStore) -> None:
    """One lookup gives the key with every field and its team's limits."""
    team = await store.create_team(TeamCreate(name="search", rpm=600, budget_usd=12.5,
                                              budget_period="day", metadata={"cc": "42"}))
    spec = parse(KeyCreate, {"name": "bot", "team_id": team.id, "models": ["chat", "embed"],
                             "rpm": 60, "tpm": 10_000, "budget_usd": 1.25,
                             "expires_at": "2099-01-01T00:00:00Z", "metadata": {"o": "x"},
                             "admin": True})
    record, key = await store.create_key(spec)
    found = await store.find_by_hash(hash_key(key))
    assert found == (record, team)
    assert record.models == ("chat", "embed") and record.rpm == 60 and record.tpm == 10_000
    assert record.budget_usd == 1.25 and record.admin and record.metadata == {"o": "x"}
    assert record.expires_at is not None and record.expires_at.timestamp() == 4070908800.0
    assert team.budget_usd == 12.5 and team.budget_period == "day"
    assert await store.find_by_hash(hash_key("sk-sb-unknown")) is None


async def test_an_expiry_reads_back_to_the_microsecond(store: KeyStore) -> None:
    """A far expiry, up to the end of 9999, is stored and read back as written (the record
    the directory caches, the admin view): not a microsecond or a day off."""
    for written in ("2500-01-01T00:00:00.000001Z", "9999-12-31T23:59:59.999999Z"):
        record, key = await store.create_key(parse(KeyCreate, {"name": "k",
                                                               "expires_at": written}))
        found = await store.find_by_hash(hash_key(key))
        assert found is not None and found[0] == record
        assert found[0].to_json(time.time())["expires_at"] == written
        assert found[0].problem(time.time()) is None
        changed = await store.update_key(record.id, parse(KeyUpdate, {"expires_at": written}))
        assert iso(changed.expires_at) == written


async def test_key_without_team_has_none(store: KeyStore) -> None:
    """A key with no team is found with team ``None`` and all models allowed."""
    record, key = await store.create_key(KeyCreate(name="solo"))
    assert await store.find_by_hash(hash_key(key)) == (record, None)
    assert record.models is None and record.allows("anything")


async def test_find_many_by_hash_spans_chunks(store: KeyStore) -> None:
    """Many hashes at once: found ones by hash, unknown ones left out."""
    made = [await store.create_key(KeyCreate(name=f"k{i}")) for i in range(3)]
    hashes = [hash_key(key) for _, key in made] + ["0" * 64]
    found = await store.find_many_by_hash(hashes * 200)
    assert set(found) == set(hashes[:3])


async def test_rotate_changes_the_key_not_the_record(store: KeyStore) -> None:
    """Rotation: same id and limits, new prefix and hash; the old key is gone."""
    record, old = await store.create_key(KeyCreate(name="r", rpm=5))
    rotated, new = await store.rotate_key(record.id)
    assert new != old and rotated.id == record.id and rotated.rpm == 5
    assert rotated.prefix == new[:PREFIX_CHARS]
    assert await store.find_by_hash(hash_key(old)) is None
    assert await store.find_by_hash(hash_key(new)) == (rotated, None)


async def test_revoke_sets_the_time_once(store: KeyStore) -> None:
    """A revoked key reports "revoked"; revoking again keeps the first time; rotating is 409."""
    record, _ = await store.create_key(KeyCreate(name="r"))
    revoked = await store.revoke_key(record.id)
    assert revoked.revoked_at is not None and revoked.problem(time.time()) == "revoked"
    again = await store.revoke_key(record.id)
    assert again.revoked_at == revoked.revoked_at
    with pytest.raises(errors.GatewayError) as caught:
        await store.rotate_key(record.id)
    assert caught.value.status_code == 409 and caught.value.code == "key_revoked"


async def test_update_changes_only_the_fields_sent(store: KeyStore) -> None:
    """PATCH semantics: sent fields change, null clears, the rest stay."""
    record, _ = await store.create_key(KeyCreate(name="u", rpm=5, tpm=50, models=["a"]))
    updated = await store.update_key(record.id, parse(KeyUpdate, {"rpm": 7, "models": None}))
    assert updated.rpm == 7 and updated.tpm == 50 and updated.models is None
    assert updated.name == "u"
    assert await store.update_key(record.id, KeyUpdate()) == updated


async def test_list_keys_by_team(store: KeyStore) -> None:
    """Listing all keys, or one team's."""
    team = await store.create_team(TeamCreate(name="t"))
    a, _ = await store.create_key(KeyCreate(name="a", team_id=team.id))
    b, _ = await store.create_key(KeyCreate(name="b"))
    assert {k.id for k in await store.list_keys()} == {a.id, b.id}
    assert [k.id for k in await store.list_keys(team_id=team.id)] == [a.id]


async def test_unknown_ids_are_not_found(store: KeyStore) -> None:
    """Every operation on an unknown key or team id raises NotFound naming the parameter."""
    calls = [store.get_key("key_x"), store.revoke_key("key_x"), store.rotate_key("key_x"),
             store.delete_key("key_x"), store.update_key("key_x", KeyUpdate(rpm=1)),
             store.get_team("team_x"), store.delete_team("team_x"),
             store.update_team("team_x", TeamUpdate(rpm=1)),
             store.create_key(KeyCreate(name="k", team_id="team_x"))]
    for call in calls:
        with pytest.raises(errors.NotFound):
            await call


async def test_team_lifecycle_and_conflicts(store: KeyStore) -> None:
    """Team names are unique (409); a team with keys cannot be deleted (409) until they go."""
    team = await store.create_team(TeamCreate(name="ops", tpm=100))
    with pytest.raises(errors.GatewayError) as taken:
        await store.create_team(TeamCreate(name="ops"))
    assert taken.value.status_code == 409 and taken.value.code == "team_exists"
    other = await store.create_team(TeamCreate(name="dev"))
    with pytest.raises(errors.GatewayError) as renamed:
        await store.update_team(other.id, TeamUpdate(name="ops"))
    assert renamed.value.code == "team_exists"
    key, _ = await store.create_key(KeyCreate(name="k", team_id=team.id))
    with pytest.raises(errors.GatewayError) as busy:
        await store.delete_team(team.id)
    assert busy.value.status_code == 409 and busy.value.code == "team_not_empty"
    await store.delete_key(key.id)
    assert (await store.delete_team(team.id)).name == "ops"
    assert [t.name for t in await store.list_teams()] == ["dev"]
    updated = await store.update_team(other.id, TeamUpdate(budget_usd=3.0))
    assert updated.budget_usd == 3.0 and updated.name == "dev"


async def test_unreachable_database_propagates() -> None:
    """A database that cannot be reached raises one of DATABASE_ERRORS, not NotFound."""
    engine = make_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/none")
    try:
        with pytest.raises(DATABASE_ERRORS):
            await KeyStore(engine).find_by_hash("0" * 64)
    finally:
        await engine.dispose()


async def test_a_key_given_as_an_id_is_not_echoed(store: KeyStore) -> None:
    """A plaintext key passed where an id belongs is refused without repeating it."""
    _, key = await store.create_key(KeyCreate(name="k"))
    with pytest.raises(errors.NotFound) as caught:
        await store.revoke_key(key)
    assert key not in caught.value.message and key[6:] not in caught.value.message


async def test_privacy_is_stored_found_with_its_team_and_cleared(store: KeyStore) -> None:
    """A key's and its team's privacy settings round-trip, come back with the key's lookup,
    change, and clear with null."""
    team = await store.create_team(TeamCreate(name="legal", privacy="redact"))
    record, key = await store.create_key(parse(KeyCreate, {"name": "k", "team_id": team.id,
                                                           "privacy": "block"}))
    assert (record.privacy, team.privacy) == ("block", "redact")
    found = await store.find_by_hash(hash_key(key))
    assert found is not None and (found[0].privacy, found[1] and found[1].privacy) == (
        "block", "redact")
    assert (await store.update_key(record.id, parse(KeyUpdate, {"privacy": None}))).privacy \
        is None
    changed = await store.update_team(team.id, parse(TeamUpdate, {"privacy": "private_only"}))
    assert changed.privacy == "private_only"
    assert [t.privacy for t in await store.list_teams()] == ["private_only"]
    found = await store.find_by_hash(hash_key(key))
    assert found is not None and found[0].privacy is None
    assert found[1] is not None and found[1].privacy == "private_only"


async def _blocked(conn_sql: list[str], action: Any, engine: AsyncEngine) -> Any:
    """``action`` run while another transaction holds ``conn_sql`` uncommitted, which is
    committed once ``action`` waits on its locks (seen in ``pg_locks``); ``action``'s result
    or error."""
    async with engine.connect() as other:
        transaction = await other.begin()
        for sql in conn_sql:
            await other.execute(text(sql))
        task = asyncio.ensure_future(action())
        async with engine.connect() as watcher:
            for _ in range(500):  # the action waits on the other transaction's row lock
                waiting = await watcher.scalar(text(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted"))
                if waiting or task.done():
                    break
                await asyncio.sleep(0.01)
        await transaction.commit()
        return await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_team_deleted_while_a_key_joins_it_answers_404_or_409(store: KeyStore) -> None:
    """The races a team delete and a key create run on Postgres: a key created into a team
    being deleted is 404 team_not_found (not 503 "database unreachable"), and a team deleted
    while a key is being added to it is 409 team_not_empty; the team and key are as the
    winner left them."""
    team = await store.create_team(TeamCreate(name="doomed"))
    [lost] = await _blocked([f"DELETE FROM teams WHERE id = '{team.id}'"],
                            lambda: store.create_key(KeyCreate(name="late", team_id=team.id)),
                            store.engine)
    assert isinstance(lost, errors.NotFound) and lost.code == "team_not_found", lost
    assert await store.list_keys() == []

    team = await store.create_team(TeamCreate(name="busy"))
    [refused] = await _blocked(
        [f"INSERT INTO api_keys (id, name, key_hash, prefix, team_id, budget_period, "
         f"metadata, admin, created_at) VALUES ('key_race', 'k', 'h', 'sk-sb-abcd', "
         f"'{team.id}', 'month', '{{}}', false, now())"],
        lambda: store.delete_team(team.id), store.engine)
    assert isinstance(refused, errors.GatewayError) and refused.code == "team_not_empty", refused
    assert (await store.get_team(team.id)).name == "busy"

    moved = (await store.create_key(KeyCreate(name="mover")))[0]
    team = await store.create_team(TeamCreate(name="gone"))
    [lost] = await _blocked([f"DELETE FROM teams WHERE id = '{team.id}'"],
                            lambda: store.update_key(moved.id, KeyUpdate(team_id=team.id)),
                            store.engine)
    assert isinstance(lost, errors.NotFound) and lost.code == "team_not_found", lost
