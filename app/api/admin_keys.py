"""The admin API for virtual keys and teams: ``/admin/keys`` and ``/admin/teams``.

Access as for the rest of the admin API (``AdminDep``). Every change goes through the gateway's
``KeyDirectory``: its store writes the database, then ``changed()`` drops the cached entries here
and tells the other gateways over Redis. A key's plaintext appears in exactly two answers, the
creation and the rotation; listings show its ``prefix``. Times are ISO 8601 UTC.

Listings (``GET /admin/keys``, ``GET /admin/teams``) go oldest first, ``limit`` (default 100, at
most 1,000) at a time, with ``next_cursor`` to pass back as ``cursor`` (null on the last page), as
``/admin/calls`` does.

A key created or changed with a model list naming a model this gateway does not serve is made
as asked (models may be configured later), and its answer carries ``warnings``, a list of
sentences saying which (a typo'd model name would otherwise show only as 404s later).

What an admin key may do (``_master_only``, ``_admin_key_guard``): the master key (or
"anonymous" in loopback-only mode) may do anything here; a virtual key marked admin may do all of
it except grant or change admin power. It gets 403 ``admin_requires_master_key`` (``param``
``admin``) when it asks for ``admin: true`` on a new key or a change, or touches a key that is
an admin key (change, rotate, revoke, delete: its own included, except revoking itself), or
changes or deletes a team that holds an admin key that is not revoked. So a short-lived or
limited admin key cannot outlive or outgrow what the master key gave it.

Errors: bad input 400 naming the field (a NUL character in ``team_id``, ``models`` or
``metadata`` included, and in a path's key or team id, 400 ``invalid_value`` naming it; another
value the database refuses 400 ``invalid_value``; a team name with whitespace around it);
unknown id 404; a team name taken
(ignoring case), team not empty, rotating a revoked key (also one revoked while the rotation
ran) 409; no key database on this gateway 503 ``keys_unavailable``; database unreachable 503
``database_unavailable``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from pydantic import AfterValidator

from app import errors
from app.api.deps import AdminDep, GatewayDep
from app.api.guard import GuardedRoute
from app.calllog.query import MAX_LIMIT, WholeNumber, decode_cursor, encode_cursor, not_empty
from app.db.engine import answering
from app.keys import KeyCreate, KeyDirectory, KeyRecord, KeyUpdate, TeamCreate, TeamUpdate
from app.keys.model import TeamRecord, no_nul, unserved
from app.keys.store import Position, position
from app.pipeline import Caller
from app.resources import resources_of

log = logging.getLogger("switchboard.admin")

router = APIRouter(prefix="/admin", tags=["admin"], route_class=GuardedRoute)


def get_directory(request: Request) -> KeyDirectory:
    """The gateway's key directory; 503 ``keys_unavailable`` when it has no key database."""
    directory = resources_of(request).keys
    if directory is None:
        raise errors.GatewayError("Virtual keys need a database, and this gateway has none.",
                                  status=503, code="keys_unavailable")
    return directory


DirectoryDep = Annotated[KeyDirectory, Depends(get_directory)]


def _nul_free(value: str, param: str) -> str:
    """A path's id, once the caller is known to be an admin. One with a NUL character (which
    Postgres refuses to compare: a 400 naming no field) is a 400 ``invalid_value`` naming
    ``param``, as a call id's is (it was a 404 echoing the id with the NUL dropped)."""
    if "\x00" in value:
        raise errors.InvalidRequest(f"Invalid value for '{param}': it contains a NUL character.",
                                    param=param, code="invalid_value")
    return value


def _key_id(key_id: str, _admin: AdminDep) -> str:
    return _nul_free(key_id, "key_id")


def _team_id(team_id: str, _admin: AdminDep) -> str:
    return _nul_free(team_id, "team_id")


KeyPathId = Annotated[str, Depends(_key_id)]
TeamPathId = Annotated[str, Depends(_team_id)]


def _key(record: KeyRecord, plaintext: str | None = None) -> dict[str, Any]:
    body = record.to_json(time.time())
    if plaintext is not None:
        body["key"] = plaintext
    return body


def _checked(body: dict[str, Any], models: Sequence[str] | None,
             gateway: GatewayDep) -> dict[str, Any]:
    """``body`` with ``warnings`` when ``models`` names a model this gateway does not serve."""
    warning = unserved(models, gateway.table.serves)
    if warning is not None:
        body["warnings"] = [warning]
    return body


# ---- what an admin key may not do


def _is_master(caller: Caller) -> bool:
    """The master key, or "anonymous" in loopback-only mode (no master key set): the callers
    that are not a virtual key."""
    return caller.key_id is None


def _master_only(why: str) -> errors.PermissionDenied:
    return errors.PermissionDenied(
        f"Only the master key can {why}; an admin key cannot grant or change admin power.",
        param="admin", code="admin_requires_master_key")


async def _admin_key_guard(caller: Caller, directory: KeyDirectory, key_id: str,
                           *, self_revoke: bool = False) -> None:
    """Nothing for the master key, nor for an admin key acting on a key that is not an admin
    key (or revoking itself, when ``self_revoke``); else 403 ``admin_requires_master_key``.
    One read of the target key, on the admin API only."""
    if _is_master(caller) or (self_revoke and key_id == caller.key_id):
        return
    async with answering("key database", log=log):
        target = await directory.store.get_key(key_id)
    if target.admin:
        raise _master_only("change, rotate, revoke or delete an admin key")


async def _team_guard(caller: Caller, directory: KeyDirectory, team_id: str) -> None:
    """Nothing for the master key, nor for an admin key acting on a team with no admin key
    that is not revoked (a team's limits bound its keys: lifting them lifts an admin key's);
    else 403 ``admin_requires_master_key``."""
    if _is_master(caller):
        return
    async with answering("key database", log=log):
        await directory.store.get_team(team_id)
        keys = await directory.store.list_keys(team_id=team_id)
    if any(key.admin and key.revoked_at is None for key in keys):
        raise _master_only("change or delete a team that holds an admin key")


# ---- keys


@router.post("/keys", status_code=201)
async def create_key(spec: KeyCreate, admin: AdminDep, directory: DirectoryDep,
                     gateway: GatewayDep) -> dict[str, Any]:
    """A new key; ``key`` in the answer is its plaintext, shown this once. Only the master
    key may make an admin key."""
    if spec.admin and not _is_master(admin):
        raise _master_only("create an admin key")
    async with answering("key database", log=log):
        record, plaintext = await directory.store.create_key(spec)
    return _checked(_key(record, plaintext), spec.models, gateway)


Listed = TypeVar("Listed", KeyRecord, TeamRecord)
Limit = Annotated[int, WholeNumber, Query(ge=1, le=MAX_LIMIT)]
Cursor = Annotated[str | None, Query(description="next_cursor from the previous page.")]


def _after(cursor: str | None, listing: str) -> Position | None:
    return None if cursor is None else decode_cursor(cursor, listing)


def _page(records: Sequence[Listed], limit: int,
          body: Callable[[Listed], dict[str, Any]], listing: str) -> dict[str, Any]:
    """A listing's answer: the first ``limit`` of the ``limit + 1`` records asked for, and the
    cursor of the next page when there was one more."""
    shown = records[:limit]
    return {"object": "list", "data": [body(record) for record in shown],
            "next_cursor": encode_cursor(*position(shown[-1].created_at, shown[-1].id),
                                         listing)
            if len(records) > limit else None}


@router.get("/keys")
async def list_keys(admin: AdminDep, directory: DirectoryDep,
                    team_id: Annotated[str | None, Query(max_length=64),
                                      AfterValidator(no_nul)] = None,
                    limit: Limit = 100, cursor: Cursor = None) -> dict[str, Any]:
    """Keys (of one team with ``team_id``), oldest first, a page at a time: pass
    ``next_cursor`` back as ``cursor`` until it is null."""
    if team_id is not None:
        not_empty(team_id, param="team_id")
    after = _after(cursor, "keys")
    async with answering("key database", log=log):
        records = await directory.store.list_keys(team_id=team_id, after=after,
                                                  limit=limit + 1)
    return _page(records, limit, _key, "keys")


@router.get("/keys/{key_id}")
async def get_key(key_id: KeyPathId, admin: AdminDep, directory: DirectoryDep) -> dict[str, Any]:
    async with answering("key database", log=log):
        return _key(await directory.store.get_key(key_id))


@router.patch("/keys/{key_id}")
async def update_key(key_id: KeyPathId, spec: KeyUpdate, admin: AdminDep, directory: DirectoryDep,
                     gateway: GatewayDep) -> dict[str, Any]:
    """Change the fields sent; ``null`` clears a limit, the team, the model list, the privacy
    setting or the expiry. The key's next call, on any gateway, runs under the change. A key
    moved into, out of or to another team, or given limits where it had none or another budget
    period, keeps what it spent (``KeyDirectory.update_key``). Only the master key may set
    ``admin: true`` or change an admin key."""
    if spec.admin and not _is_master(admin):
        raise _master_only("make a key an admin key")
    await _admin_key_guard(admin, directory, key_id)
    async with answering("key database", log=log):
        record = await directory.update_key(key_id, spec)
    return _checked(_key(record), spec.models, gateway)


@router.post("/keys/{key_id}/rotate")
async def rotate_key(key_id: KeyPathId, admin: AdminDep, directory: DirectoryDep) -> dict[str, Any]:
    """A new plaintext for the key (answered once); the old one stops working at once."""
    await _admin_key_guard(admin, directory, key_id)
    async with answering("key database", log=log):
        record, plaintext = await directory.store.rotate_key(key_id)
    await directory.changed(key_id=key_id)
    return _key(record, plaintext)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(key_id: KeyPathId, admin: AdminDep, directory: DirectoryDep) -> dict[str, Any]:
    """Revoke the key (kept for the record; its calls are refused with 401). An admin key
    may revoke itself."""
    await _admin_key_guard(admin, directory, key_id, self_revoke=True)
    async with answering("key database", log=log):
        record = await directory.store.revoke_key(key_id)
    await directory.changed(key_id=key_id)
    return _key(record)


@router.delete("/keys/{key_id}")
async def delete_key(key_id: KeyPathId, admin: AdminDep, directory: DirectoryDep) -> dict[str, Any]:
    await _admin_key_guard(admin, directory, key_id)
    async with answering("key database", log=log):
        record = await directory.store.delete_key(key_id)
    await directory.changed(key_id=key_id)
    return {"object": "key", "id": record.id, "deleted": True}


# ---- teams


@router.post("/teams", status_code=201)
async def create_team(spec: TeamCreate, admin: AdminDep,
                      directory: DirectoryDep) -> dict[str, Any]:
    async with answering("key database", log=log):
        return (await directory.store.create_team(spec)).to_json()


@router.get("/teams")
async def list_teams(admin: AdminDep, directory: DirectoryDep, limit: Limit = 100,
                     cursor: Cursor = None) -> dict[str, Any]:
    """Teams, oldest first, a page at a time (as ``/admin/keys``)."""
    after = _after(cursor, "teams")
    async with answering("key database", log=log):
        teams = await directory.store.list_teams(after=after, limit=limit + 1)
    return _page(teams, limit, TeamRecord.to_json, "teams")


@router.get("/teams/{team_id}")
async def get_team(team_id: TeamPathId, admin: AdminDep, directory: DirectoryDep) -> dict[str, Any]:
    async with answering("key database", log=log):
        return (await directory.store.get_team(team_id)).to_json()


@router.patch("/teams/{team_id}")
async def update_team(team_id: TeamPathId, spec: TeamUpdate, admin: AdminDep,
                      directory: DirectoryDep) -> dict[str, Any]:
    """Change the fields sent; the team's keys pick up the new limits and privacy setting on
    every gateway. A team given limits where it had none, or another budget period, keeps what
    it spent (``KeyDirectory.update_team``). A team holding an admin key: master key only."""
    await _team_guard(admin, directory, team_id)
    async with answering("key database", log=log):
        team = await directory.update_team(team_id, spec)
    return team.to_json()


@router.delete("/teams/{team_id}")
async def delete_team(team_id: TeamPathId, admin: AdminDep,
                      directory: DirectoryDep) -> dict[str, Any]:
    """Remove a team with no keys left (409 ``team_not_empty`` otherwise)."""
    await _team_guard(admin, directory, team_id)
    async with answering("key database", log=log):
        team = await directory.store.delete_team(team_id)
    await directory.changed(team_id=team_id)
    return {"object": "team", "id": team.id, "deleted": True}
