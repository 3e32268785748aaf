"""How the call log reports trouble: the condition of each part, and warnings that do not flood.

``Condition``: whether the store or a spool works now and, when it does not, a reason code from a
small fixed set (``STORE_REASONS``, or an errno name for the file spool) and a line for people.
``/readyz`` shows them, the ``switchboard_calllog_*_up`` gauges export them.

``Throttle``: one recurring problem logs its first occurrence at once, then at most one line per
``every_s`` saying how many were held back, and one line when it clears. An outage of Redis
logged one WARNING per 50 ms batch before.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

STORE_REASONS = ("unreachable", "unmigrated", "timeout", "write_failed")
"""Why the store takes no rows: ``unreachable`` (the schema check could not reach the database),
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
        out["since"] = datetime.fromtimestamp(self.since, UTC).isoformat(timespec="seconds")
        return out


UP = Condition(up=True, since=0.0)
"""The condition of a part not yet heard from."""


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
