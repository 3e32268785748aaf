"""``KeyStore``: virtual keys and teams in the call log's database (Postgres or SQLite).

Tables ``api_keys`` and ``teams`` (migration 0005; their ``privacy`` columns, 0013). The
plaintext of a key exists only in the return value of ``create_key`` and ``rotate_key``; the
database holds its SHA-256.

Errors: an unknown id is ``errors.NotFound``; a team name already taken (ignoring case: the
unique index on ``lower(name)``, migration 0019), deleting a team that still has keys, or
rotating a revoked key is a 409 ``errors.Conflict``. A rotation and a revocation of one key
serialise on its row: a rotation answers a new key only if it changed the key before any
revocation did, so a revoked key never gets a new secret that looks as if it worked. Database
failures (``app.db.engine.DATABASE_ERRORS``) propagate: the callers decide between 503 and
serving a cache.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Select,
    Table,
    and_,
    delete,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app import errors
from app.db.key_changes import clock_sql
from app.db.models import ApiKey, Base, KeyChange, Team
from app.keys.model import (
    KEY_PREFIX,
    KeyCreate,
    KeyRecord,
    KeyUpdate,
    TeamCreate,
    TeamRecord,
    TeamUpdate,
    display_prefix,
    hash_key,
    new_id,
    new_key,
)

LOOKUP_CHUNK = 500
"""Key hashes per query when looking up many keys (``find_many_by_hash``; the key directory's
batched lookups ask for at most this many at once, one query)."""

_KEY = Base.metadata.tables[ApiKey.__tablename__]
_TEAM = Base.metadata.tables[Team.__tablename__]
_CHANGES = Base.metadata.tables[KeyChange.__tablename__]


@dataclass(frozen=True, slots=True)
class Change:
    """One row of the key change log (``app.db.key_changes``)."""

    id: int
    at: float
    """The database's clock when the change was made, epoch seconds."""
    key_id: str | None
    team_id: str | None


Position = tuple[datetime, str]
"""Where a listing stands: the ``(created_at, id)`` of the last key or team it gave (the order
they are listed in; ``app.calllog.query.encode_cursor`` makes it a cursor)."""


def position(created_at: float, id: str) -> Position:
    """The position of a key or team record (``created_at`` in epoch seconds: exact to the
    microsecond the database keeps, for any date before the year 2200)."""
    return datetime.fromtimestamp(created_at, UTC), id


def _page(query: Select[Any], table: Table, after: Position | None,
          limit: int | None) -> Select[Any]:
    """``query`` in listing order, from the row after ``after``, at most ``limit`` rows."""
    query = query.order_by(table.c.created_at, table.c.id)
    if after is not None:
        at, last = after
        query = query.where(or_(table.c.created_at > at,
                                and_(table.c.created_at == at, table.c.id > last)))
    return query if limit is None else query.limit(limit)


def _moment(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)  # SQLite hands back naive datetimes; stored as UTC


def _epoch(moment: datetime | None) -> float | None:
    moment = _utc(moment)
    return None if moment is None else moment.timestamp()


def _money(value: Decimal | float | None) -> float | None:
    return None if value is None else float(value)


def _team_record(row: Any) -> TeamRecord:
    return TeamRecord(id=row.id, name=row.name, rpm=row.rpm, tpm=row.tpm,
                      budget_usd=_money(row.budget_usd), budget_period=row.budget_period,
                      metadata=dict(row._mapping["metadata"] or {}),
                      created_at=_epoch(row.created_at) or 0.0, privacy=row.privacy)


def _key_record(row: Any) -> KeyRecord:
    return KeyRecord(id=row.id, name=row.name, prefix=row.prefix, team_id=row.team_id,
                     models=None if row.models is None else tuple(row.models),
                     rpm=row.rpm, tpm=row.tpm, budget_usd=_money(row.budget_usd),
                     budget_period=row.budget_period, expires_at=_utc(row.expires_at),
                     metadata=dict(row._mapping["metadata"] or {}), admin=row.admin,
                     created_at=_epoch(row.created_at) or 0.0,
                     revoked_at=_epoch(row.revoked_at), privacy=row.privacy)


def _columns(changes: dict[str, Any]) -> dict[str, Any]:
    """Validated input fields as column values."""
    values = dict(changes)
    if "budget_usd" in values and values["budget_usd"] is not None:
        values["budget_usd"] = Decimal(str(values["budget_usd"]))
    return values


def key_not_found(key_id: str) -> errors.NotFound:
    """The 404 for a key id that names no key."""
    if key_id.startswith(KEY_PREFIX):  # a key pasted in place of its id: never echo it
        return errors.NotFound("That is a key, not a key id: ids look like key_0123456789ab.",
                               param="key_id", code="key_not_found")
    return errors.NotFound(f"No key with id '{key_id[:80]}'.", param="key_id",
                           code="key_not_found")


def team_not_found(team_id: str, *, param: str = "team_id") -> errors.NotFound:
    """The 404 for a team id that names no team."""
    return errors.NotFound(f"No team with id '{team_id[:80]}'.", param=param,
                           code="team_not_found")


def _team_not_empty(team_id: str, why: str) -> errors.Conflict:
    return errors.Conflict(f"Team '{team_id[:80]}' {why}; delete or move them first.",
                           param="team_id", code="team_not_empty")


def _name_taken(name: str, taken: str | None) -> errors.Conflict:
    """409 for ``name``; ``taken``: the name it clashes with, when it differs only in case."""
    clash = f"'{name}'" if taken in (None, name) else f"'{taken}' (ignoring case, as '{name}')"
    return errors.Conflict(f"A team named {clash} exists already.", param="name",
                           code="team_exists")


def _key_revoked() -> errors.Conflict:
    return errors.Conflict("This key is revoked; create a new one instead.", param="key_id",
                           code="key_revoked")


class KeyStore:
    """Keys and teams over one ``AsyncEngine`` (the caller owns and disposes of it)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # ---- keys

    async def create_key(self, spec: KeyCreate) -> tuple[KeyRecord, str]:
        """A new key and its plaintext (returned here only, never stored)."""
        key = new_key()
        values = _columns(spec.model_dump())
        values.update(id=new_id("key"), key_hash=hash_key(key), prefix=display_prefix(key),
                      created_at=_moment(time.time()), revoked_at=None)
        try:
            async with self.engine.begin() as conn:
                if spec.team_id is not None:
                    await self._require_team(conn, spec.team_id)
                await conn.execute(insert(_KEY).values(**values))
                record = await self._key(conn, values["id"])
        except IntegrityError:
            if spec.team_id is None:
                raise
            raise team_not_found(spec.team_id) from None  # deleted since it was checked
        return record, key

    async def get_key(self, key_id: str) -> KeyRecord:
        async with self.engine.connect() as conn:
            return await self._key(conn, key_id)

    async def find_by_hash(self, key_hash: str) -> tuple[KeyRecord, TeamRecord | None] | None:
        """The key with this hash and its team (one query), or ``None``."""
        found = await self.find_many_by_hash([key_hash])
        return found.get(key_hash)

    async def find_many_by_hash(
            self, hashes: Iterable[str]) -> dict[str, tuple[KeyRecord, TeamRecord | None]]:
        """The keys among ``hashes`` that exist, with their teams, by hash (one query per
        ``LOOKUP_CHUNK`` hashes)."""
        wanted = list(dict.fromkeys(hashes))
        found: dict[str, tuple[KeyRecord, TeamRecord | None]] = {}
        async with self.engine.connect() as conn:
            for start in range(0, len(wanted), LOOKUP_CHUNK):
                chunk = wanted[start:start + LOOKUP_CHUNK]
                query = (select(_KEY, *(c.label(f"t_{c.name}") for c in _TEAM.c))
                         .select_from(_KEY.outerjoin(_TEAM, _KEY.c.team_id == _TEAM.c.id))
                         .where(_KEY.c.key_hash.in_(chunk)))
                for row in (await conn.execute(query)).all():
                    found[row.key_hash] = (_key_record(row), _joined_team(row))
        return found

    async def list_keys(self, team_id: str | None = None, *, after: Position | None = None,
                        limit: int | None = None) -> list[KeyRecord]:
        """Keys (of one team, when given), oldest first: all of them, or ``limit`` from the
        one after ``after``."""
        query = select(_KEY)
        if team_id is not None:
            query = query.where(_KEY.c.team_id == team_id)
        query = _page(query, _KEY, after, limit)
        async with self.engine.connect() as conn:
            return [_key_record(row) for row in (await conn.execute(query)).all()]

    async def update_key(self, key_id: str, spec: KeyUpdate) -> KeyRecord:
        """The key with the fields sent in ``spec`` changed."""
        values = _columns(spec.changes())
        team_id = values.get("team_id")
        try:
            async with self.engine.begin() as conn:
                if team_id is not None:
                    await self._require_team(conn, team_id)
                if values:
                    await conn.execute(update(_KEY).where(_KEY.c.id == key_id).values(**values))
                return await self._key(conn, key_id)
        except IntegrityError:
            if team_id is None:
                raise
            raise team_not_found(team_id) from None  # deleted since it was checked

    async def rotate_key(self, key_id: str) -> tuple[KeyRecord, str]:
        """A new plaintext for the key (same id and limits); the old one stops working."""
        key = new_key()
        async with self.engine.begin() as conn:
            # One conditional UPDATE, not a read then a write: a revocation committed between
            # the two would leave a revoked key with a new secret answered as if it worked.
            # A revocation that comes after it waits for this transaction (the row's lock).
            rotated = await conn.execute(
                update(_KEY).where(_KEY.c.id == key_id, _KEY.c.revoked_at.is_(None))
                .values(key_hash=hash_key(key), prefix=display_prefix(key)))
            if not rotated.rowcount:
                await self._key(conn, key_id)  # 404 when there is no such key
                raise _key_revoked()
            return await self._key(conn, key_id), key

    async def revoke_key(self, key_id: str) -> KeyRecord:
        """The key, revoked (from now on; a revoked key keeps its first revocation time)."""
        async with self.engine.begin() as conn:
            await conn.execute(update(_KEY).where(_KEY.c.id == key_id, _KEY.c.revoked_at.is_(None))
                               .values(revoked_at=_moment(time.time())))
            return await self._key(conn, key_id)

    async def delete_key(self, key_id: str) -> KeyRecord:
        """Remove the key; returns what it was."""
        async with self.engine.begin() as conn:
            record = await self._key(conn, key_id)
            await conn.execute(delete(_KEY).where(_KEY.c.id == key_id))
        return record

    async def changes_since(self, since: float | None) -> tuple[list[Change], float]:
        """The key change log's rows made at or after ``since`` (``None``: none), oldest
        first, and the database's clock read just before them (one connection)."""
        async with self.engine.connect() as conn:
            now = float(await conn.scalar(select(literal_column(
                clock_sql(conn.dialect.name)))) or 0.0)
            if since is None:
                return [], now
            rows = (await conn.execute(select(_CHANGES).where(_CHANGES.c.at >= since)
                                       .order_by(_CHANGES.c.id))).all()
        return [Change(row.id, row.at, row.key_id, row.team_id) for row in rows], now

    async def prune_changes(self, before: float) -> int:
        """Delete the key change log's rows made before ``before``; how many went."""
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(_CHANGES).where(_CHANGES.c.at < before))
        return int(result.rowcount or 0)

    # ---- teams

    async def create_team(self, spec: TeamCreate) -> TeamRecord:
        values = _columns(spec.model_dump())
        values.update(id=new_id("team"), created_at=_moment(time.time()))
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(_TEAM).values(**values))
                return await self._team(conn, values["id"])
        except IntegrityError:
            raise await self._name_taken(spec.name) from None

    async def get_team(self, team_id: str) -> TeamRecord:
        async with self.engine.connect() as conn:
            return await self._team(conn, team_id)

    async def list_teams(self, *, after: Position | None = None,
                         limit: int | None = None) -> list[TeamRecord]:
        """Teams, oldest first: all of them, or ``limit`` from the one after ``after``."""
        query = _page(select(_TEAM), _TEAM, after, limit)
        async with self.engine.connect() as conn:
            return [_team_record(row) for row in (await conn.execute(query)).all()]

    async def update_team(self, team_id: str, spec: TeamUpdate) -> TeamRecord:
        values = _columns(spec.changes())
        try:
            async with self.engine.begin() as conn:
                if values:
                    await conn.execute(update(_TEAM).where(_TEAM.c.id == team_id)
                                       .values(**values))
                return await self._team(conn, team_id)
        except IntegrityError:
            raise await self._name_taken(str(values.get("name"))) from None

    async def delete_team(self, team_id: str) -> TeamRecord:
        """Remove a team that has no keys (revoked ones count: delete them first)."""
        try:
            async with self.engine.begin() as conn:
                record = await self._team(conn, team_id)
                count = await conn.scalar(select(func.count()).select_from(_KEY)
                                          .where(_KEY.c.team_id == team_id))
                if count:
                    raise _team_not_empty(team_id, f"still has {count} key(s)")
                await conn.execute(delete(_TEAM).where(_TEAM.c.id == team_id))
        except IntegrityError:  # a key was added to it since it was counted
            raise _team_not_empty(team_id, "has a key added just now") from None
        return record

    # ---- helpers

    async def _name_taken(self, name: str) -> errors.GatewayError:
        """The 409 for a team name the unique index refused, naming the team it clashes with."""
        async with self.engine.connect() as conn:
            taken = await conn.scalar(select(_TEAM.c.name).where(
                func.lower(_TEAM.c.name) == func.lower(name)).limit(1))
        return _name_taken(name, taken)

    async def _key(self, conn: AsyncConnection, key_id: str) -> KeyRecord:
        row = (await conn.execute(select(_KEY).where(_KEY.c.id == key_id))).first()
        if row is None:
            raise key_not_found(key_id)
        return _key_record(row)

    async def _team(self, conn: AsyncConnection, team_id: str) -> TeamRecord:
        row = (await conn.execute(select(_TEAM).where(_TEAM.c.id == team_id))).first()
        if row is None:
            raise team_not_found(team_id)
        return _team_record(row)

    async def _require_team(self, conn: AsyncConnection, team_id: str) -> None:
        found = await conn.scalar(select(_TEAM.c.id).where(_TEAM.c.id == team_id))
        if found is None:
            raise team_not_found(team_id)


def _joined_team(row: Row[Any]) -> TeamRecord | None:
    """The team of a key row joined with its team's columns (labelled ``t_*``)."""
    mapping = row._mapping
    if mapping["t_id"] is None:
        return None
    return TeamRecord(id=mapping["t_id"], name=mapping["t_name"], rpm=mapping["t_rpm"],
                      tpm=mapping["t_tpm"], budget_usd=_money(mapping["t_budget_usd"]),
                      budget_period=mapping["t_budget_period"],
                      metadata=dict(mapping["t_metadata"] or {}),
                      created_at=_epoch(mapping["t_created_at"]) or 0.0,
                      privacy=mapping["t_privacy"])
