"""Authenticate: who is calling, before the body is read; and may they use this model.

A caller presents a key as ``Authorization: Bearer KEY`` or ``x-api-key: KEY``; with both, the
Bearer key alone counts (``presented_key``), on every route, and the caller it makes is what the
call is authorised, limited, charged and recorded under: one key never pays for another's call.
The master key (``SWITCHBOARD_MASTER_KEY``) is compared in constant time; a virtual key
(``sk-sb-...``) is looked up by its hash in the key directory (``app.keys``), cached in memory,
so a known key costs one SHA-256 and a dict lookup. With no master key configured (loopback-only
mode) a caller without a key is ``anonymous``; a virtual key it presents is still checked and its
limits apply.

Refusals, in OpenAI's shape: no key 401 ``missing_api_key``; an unknown, revoked or expired key
401 ``invalid_api_key``; a model the key may not use 403 ``model_not_allowed``; a virtual key the
gateway cannot check (database down, key not cached) 503 ``keys_unavailable``, never a 401,
with ``Retry-After`` (``app.keys.directory.DOWN_FOR_S``, rounded up).
"""

from __future__ import annotations

import hmac
import math
import time

from pydantic import SecretStr

from app import errors
from app.keys import Entry, KeyDirectory, KeysUnavailable, hash_key
from app.keys.directory import DOWN_FOR_S
from app.limits import Bucket, Limiter, LocalLimiter
from app.limits.carry import LocalCarry
from app.pipeline import ANONYMOUS, MASTER, Caller, ModelCall, Slot, Stage
from app.privacy.policy import tighter

VIRTUAL_PREFIX = "sk-sb-"


def presented_key(headers: dict[str, str]) -> str | None:
    """The key from ``Authorization: Bearer ...``, else from ``x-api-key`` (read only when
    ``Authorization`` holds no Bearer token: absent, empty, or another scheme)."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return headers.get("x-api-key") or None


def caller_of(entry: Entry) -> Caller:
    """The caller a directory entry stands for, with the buckets its calls are charged to and
    the privacy setting they run under (the stricter of the key's and the team's)."""
    key, team = entry.key, entry.team
    buckets: list[Bucket] = []
    if key.limited:
        buckets.append(Bucket("key", key.id, key.rpm, key.tpm, key.budget_usd,
                              key.budget_period, team=key.team_id))
    if team is not None and team.limited:
        buckets.append(Bucket("team", team.id, team.rpm, team.tpm, team.budget_usd,
                              team.budget_period))
    return Caller("key", key_id=key.id, team_id=key.team_id, admin=key.admin,
                  models=None if key.models is None else frozenset(key.models),
                  buckets=tuple(buckets),
                  privacy=tighter(key.privacy or "allow", None if team is None else team.privacy))


class Authenticate(Stage):
    """The first stage; also what the admin and ``/v1/models`` routes use (``identify``)."""

    slot = Slot.AUTHENTICATE

    def __init__(self, master_key: SecretStr | None, keys: KeyDirectory | None, *,
                 limiter: Limiter | None = None) -> None:
        """``limiter``: the one the callers' calls are admitted by, told when a caller is
        built anew (``Limiter.forget``). The in-process limiter's counters also carry the
        spend of a key or team whose caller was replaced (``app.limits.carry.LocalCarry``:
        its next caller with a budget waits for them before it is returned); Redis's are
        carried by the change itself (``KeyDirectory.update_key``)."""
        self._master = None if master_key is None else master_key.get_secret_value().encode()
        self.own_keys = () if master_key is None else (master_key.get_secret_value(),)
        self._keys = keys
        self._limiter = limiter
        self._carry = (LocalCarry(keys.store.engine, limiter)
                       if keys is not None and isinstance(limiter, LocalLimiter) else None)
        self._callers: dict[str, tuple[Entry, Caller]] = {}
        """The caller built for each cached directory entry, by key hash (forgotten when the
        directory drops or replaces the entry, rebuilt at its next use)."""
        if keys is not None:
            keys.on_dropped = self._dropped

    async def identify(self, headers: dict[str, str]) -> Caller:
        """The caller presenting ``headers``; a ``GatewayError`` when refused."""
        key = presented_key(headers)
        if key is None:
            if self._master is None:
                return ANONYMOUS
            raise errors.AuthenticationFailed(
                "You didn't provide an API key. Send it as 'Authorization: Bearer KEY' or "
                "'x-api-key: KEY'.",
                code="missing_api_key")
        if self._master is not None and hmac.compare_digest(key.encode(), self._master):
            return MASTER
        if self._keys is not None and key.startswith(VIRTUAL_PREFIX):
            return await self._virtual(key)
        if self._master is None:
            return ANONYMOUS
        raise _invalid()

    async def _virtual(self, key: str) -> Caller:
        assert self._keys is not None
        digest = hash_key(key)
        entry = self._keys.cached(digest)
        if entry is None:
            try:
                entry = await self._keys.resolve(key)
            except KeysUnavailable:
                unavailable = errors.GatewayError(
                    "The gateway cannot check this API key right now; retry shortly.",
                    status=503, code="keys_unavailable")
                # Keys not cached keep failing at once for DOWN_FOR_S after a failed lookup:
                # an SDK retrying sooner (the OpenAI SDK's first wait is under a second) only
                # spends a retry.
                unavailable.headers.append((b"retry-after", b"%d" % math.ceil(DOWN_FOR_S)))
                raise unavailable from None
            if entry is None:
                raise _invalid()
        problem = entry.key.problem(time.time())
        if problem is not None:
            raise RefusedKey(f"This API key is {problem}.", key_id=entry.key.id,
                             team_id=entry.key.team_id)
        known = self._callers.get(digest)
        if known is not None:
            if known[0] is entry:
                return known[1]
            self._forget(known[1])  # built from an entry read before the change it missed
        caller = caller_of(entry)
        if self._carry is not None and caller.buckets:
            await self._carry.ready(caller.buckets)
            known = self._callers.get(digest)
            if known is not None:
                if known[0] is entry:  # a call that waited beside this one
                    return known[1]
                self._forget(known[1])
        if len(self._callers) > 100_000:  # bounded like the directory itself
            for _, old in self._callers.values():
                self._forget(old)
            self._callers.clear()
        self._callers[digest] = (entry, caller)
        return caller

    def _dropped(self, digest: str) -> None:
        """The directory dropped or replaced the entry of ``digest`` (``KeyDirectory.on_dropped``):
        the caller built from it is forgotten."""
        known = self._callers.pop(digest, None)
        if known is not None:
            self._forget(known[1])

    def _forget(self, caller: Caller) -> None:
        """``caller`` is replaced by one built anew, with new buckets: the limiter settles what
        it holds of the old ones' spend now (a credit's tally), so that the new buckets'
        admissions, under a budget that may be lower, count it; the in-process limiter's
        counters of its key and team are carried before a budget of theirs is next read."""
        if self._limiter is not None and caller.buckets:
            self._limiter.forget(caller.buckets)
        if self._carry is not None and caller.key_id is not None:
            self._carry.missed(caller.key_id, caller.team_id)

    async def on_headers(self, call: ModelCall) -> None:
        record = call.record
        try:
            caller = await self.identify(call.incoming.headers)
        except RefusedKey as refused:
            record.key_id, record.team_id = refused.key_id, refused.team_id
            raise
        call.caller = caller
        record.caller = caller.name
        if caller.key_id is not None:
            record.key_id, record.team_id = caller.key_id, caller.team_id

    async def on_request(self, call: ModelCall) -> None:
        if call.request is not None:
            check_model(call.caller, call.request.model)


class RefusedKey(errors.AuthenticationFailed):
    """401 ``invalid_api_key`` for a key the directory knows but refuses (revoked, expired):
    its call record still names the key and team, so a revoked key's callers can be found."""

    def __init__(self, message: str, *, key_id: str, team_id: str | None) -> None:
        super().__init__(message, code="invalid_api_key")
        self.key_id, self.team_id = key_id, team_id


def check_model(caller: Caller, model: str) -> None:
    """403 ``model_not_allowed`` when ``caller``'s key may not use ``model``."""
    if caller.models is not None and model not in caller.models:
        raise errors.PermissionDenied(f"This API key may not use the model '{model[:200]}'.",
                                      param="model", code="model_not_allowed")


def _invalid() -> errors.GatewayError:
    return errors.AuthenticationFailed("Incorrect API key provided.", code="invalid_api_key")
