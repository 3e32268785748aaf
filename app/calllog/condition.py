"""How the call log reports trouble: the condition of each part, and warnings that do not flood.

``Condition``: whether the store or a spool works now and, when it does not, a reason code from a
small fixed set (``STORE_REASONS``, or an errno name for the file spool) and a line for people.
``/readyz`` shows them, the ``switchboard_calllog_*_up`` gauges export them.

``Throttle``: one recurring problem logs its first occurrence at once, then at most one line per
``every_s`` saying how many were held back, and one line when it clears. An outage of Redis
logged one WARNING per 50 ms batch before.

``Health``: the writer's view of its parts: their conditions, the pause before a failed part is
tried again, and the throttled lines.
"""

from __future__ import annotations

import errno
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.calllog.seams import SpoolUnavailable, SpoolWriteFailed
from app.times import iso

STORE_REASONS = ("unreachable", "unmigrated", "timeout", "write_failed")
"""Why the store takes no rows: ``unreachable`` (the schema check, or a write, could not connect),
``unmigrated`` (reachable, but not at this version's schema: run ``switchboard db upgrade``),
``timeout`` (a batch was not committed within the store timeout: a hung or overloaded database),
``write_failed`` (the database refused or dropped a write)."""


@dataclass(frozen=True, slots=True)
class Condition:
    """One part's state since ``since`` (epoch seconds). ``detail`` never holds a password: the
    database URL in it is masked, driver and OS messages name hosts and paths only."""

    up: bool
    reason: str | None = None
    detail: str | None = None
    since: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"up": self.up}
        if not self.up:
            out["reason"] = self.reason
            out["detail"] = self.detail
        out["since"] = iso(self.since)
        return out


UP = Condition(up=True, since=0.0)
"""A part presumed to work (``Health`` dates it when it starts)."""


_CLIENT_ADDRESS = re.compile(r"(?<![\w])host=([^,()<>]+),port=(\d+)")


def without_client_reprs(text: str) -> str:
    """``text`` (a redis-py error's message) with each client object's repr, ``<redis...(...)>``,
    replaced by the address it names: redis-py's ``MasterNotFoundError`` quotes one per sentinel,
    every setting of its connection included, a screenful per line of ``/readyz``."""
    out, done = [], 0
    while (start := text.find("<redis.", done)) >= 0:
        depth, end = 0, start
        for end in range(start, len(text)):
            depth += {"<": 1, ">": -1}.get(text[end], 0)
            if depth == 0:
                break
        else:  # no end: not a repr
            break
        found = _CLIENT_ADDRESS.search(text, start, end)
        out += [text[done:start], f"{found[1]}:{found[2]}" if found else "a Redis client"]
        done = end + 1
    out.append(text[done:])
    return "".join(out)


def errno_name(number: int | None) -> str:
    """``ENOSPC`` for 28: the name of an errno value (``oserror`` when there is none)."""
    return errno.errorcode.get(number, "oserror") if number is not None else "oserror"


class Throttle:
    """Rate-limited logging of one recurring problem (see the module docstring)."""

    def __init__(self, logger: logging.Logger, *, level: int = logging.WARNING,
                 every_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._level = level
        self._every_s = every_s
        self._clock = clock
        self._next_at: float | None = None  # None: no episode going on
        self._held = 0
        self._last_at = 0.0

    @property
    def active(self) -> bool:
        """Whether the problem has occurred since the last ``clear``."""
        return self._next_at is not None

    def __call__(self, message: str, *args: object) -> None:
        """One occurrence: logged unless a line went out less than ``every_s`` ago."""
        now = self._clock()
        if self._next_at is not None and now < self._next_at:
            self._held += 1
            return
        if self._held:
            message += " (%d more like it in the last %.0fs, not logged)"
            args = (*args, self._held, now - self._last_at)
        self._log.log(self._level, message, *args)
        self._next_at = now + self._every_s
        self._last_at = now
        self._held = 0

    def clear(self, message: str, *args: object) -> None:
        """The problem is over: log ``message`` (at INFO, with the count of lines held back)
        if it had occurred, and start afresh."""
        if self._next_at is None:
            return
        if self._held:
            message += " (%d occurrence(s) not logged)"
            args = (*args, self._held)
        self._log.info(message, *args)
        self._next_at = None
        self._held = 0


class Health:
    """What works in the call log now, when to try a failed part again, and the log lines when
    that changes: ``store``, ``file`` (the spool directory) and, when configured, ``redis``.

    A part that fails is paused for ``retry_s`` (``store_usable``/``redis_usable`` say so), its
    condition records the reason, and its ``Throttle`` logs; when it works again, one line.
    Details come from ``StoreUnavailable``/``SpoolUnavailable`` messages (the database URL in
    them is masked)."""

    def __init__(self, logger: logging.Logger, *, store: Condition, redis: bool,
                 retry_s: float, warn_every_s: float) -> None:
        self._retry_s = retry_s
        now = time.time()
        self.store = store if not store.up else Condition(up=True, since=now)
        self.spools: dict[str, Condition] = {"file": Condition(up=True, since=now)}
        if redis:
            self.spools["redis"] = Condition(up=True, since=now)
        self._store_paused_until = 0.0
        self._redis_paused_until = 0.0
        self._store_warning = Throttle(logger, every_s=warn_every_s)
        self._schema_error = Throttle(logger, level=logging.ERROR, every_s=warn_every_s)
        self._redis_warning = Throttle(logger, every_s=warn_every_s)
        self.loss = Throttle(logger, level=logging.ERROR, every_s=warn_every_s)
        """For lines about rows that nothing could take."""

    def conditions(self) -> dict[str, Condition]:
        return {"store": self.store, **self.spools}

    def as_dict(self) -> dict[str, Any]:
        return {"store": self.store.as_dict(),
                "spools": {name: c.as_dict() for name, c in self.spools.items()}}

    def down(self) -> dict[str, str | None]:
        """Each part not working, with its detail (for a log line)."""
        return {name: c.detail or c.reason for name, c in self.conditions().items() if not c.up}

    def resume(self) -> None:
        """Try every part at once again (a shutdown's last flush), except a store whose last
        write timed out: a hung database would only hold the shutdown for another store
        timeout, and the rows go to the spools instead (the next start replays them)."""
        self._redis_paused_until = 0.0
        if self.store.up or self.store.reason != "timeout":
            self._store_paused_until = 0.0

    # ---- the store ------------------------------------------------------------------------

    def store_usable(self) -> bool:
        return time.monotonic() >= self._store_paused_until

    def store_failed(self, reason: str, detail: str) -> None:
        """``reason``: one of ``STORE_REASONS``."""
        self._store_paused_until = time.monotonic() + self._retry_s
        current = self.store
        same = not current.up and current.reason == reason
        self.store = Condition(up=False, reason=reason, detail=detail,
                               since=current.since if same else time.time())
        if reason == "unmigrated":
            self._schema_error("call log database not migrated (%s); spooling call records "
                               "until it is", detail)
        else:
            self._store_warning("call store unavailable (%s: %s); spooling, retry in %.1fs",
                                reason, detail, self._retry_s)

    def store_back(self) -> None:
        if self.store.up:
            return
        self.store = Condition(up=True)
        self._store_paused_until = 0.0
        self._store_warning.clear("call store is back; storing and replaying spooled rows")
        self._schema_error.clear("call log database migrated; storing and replaying spooled rows")

    def store_down_at_start(self) -> None:
        if not self.store.up:
            self._store_warning("call log database unavailable at start (%s); serving and "
                                "spooling call records, checking again every %.0fs",
                                self.store.detail, self._retry_s)

    # ---- the spools -----------------------------------------------------------------------

    def redis_usable(self) -> bool:
        return time.monotonic() >= self._redis_paused_until

    def redis(self, error: str | None) -> None:
        """The outcome of talking to Redis: ``None`` when it answered, else why not."""
        current = self.spools.get("redis")
        if current is None:
            return
        if error is None:
            if not current.up:
                self.spools["redis"] = Condition(up=True)
                self._redis_warning.clear("Redis answers again; using the Redis spool")
            return
        self._redis_paused_until = time.monotonic() + self._retry_s
        error = without_client_reprs(error)
        self.spools["redis"] = Condition(up=False, reason="unavailable", detail=error,
                                         since=current.since if not current.up else time.time())
        self._redis_warning("Redis unavailable (%s); spooling call records to the local file, "
                            "retrying every %.0fs", error, self._retry_s)

    def file(self, condition: Condition) -> None:
        """The spool directory's condition (the journal and the file spool report here)."""
        current = self.spools["file"]
        if not condition.up and not current.up:
            condition = Condition(up=False, reason=condition.reason, detail=condition.detail,
                                  since=current.since)
        self.spools["file"] = condition

    def spool(self, name: str, exc: SpoolUnavailable | None) -> None:
        """The outcome of a spool operation (``name``: ``redis`` or ``file``)."""
        if name == "redis":
            self.redis(None if exc is None else str(exc))
        elif exc is None:
            if not self.spools["file"].up:
                self.file(Condition(up=True))
        else:
            cause = exc.__cause__
            number = exc.errno if isinstance(exc, SpoolWriteFailed) \
                else cause.errno if isinstance(cause, OSError) else None
            self.file(Condition(up=False, reason=errno_name(number), detail=str(exc)))
