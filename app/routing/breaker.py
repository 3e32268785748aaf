"""Circuit breakers: one per target (provider and model) and place its provider points to
(``location``), so that a dead or black-holed target costs the first few calls, not every one.

- **closed** (healthy): calls go through. It opens after ``failures`` consecutive failed
  attempts, or when at least ``error_rate`` of the attempts of the last ``window_s`` failed
  (counted once there are ``min_calls`` of them).
- **open**: the strategies' order skips the target (unless every target of the call is open:
  then they are tried anyway, in order, rather than failing a call that one of them might
  serve). After ``cooldown_s`` it turns half-open.
- **half-open**: one call at a time probes it. A success closes it; a failure opens it again for
  twice the last cooldown, up to ``max_cooldown_s``.

An attempt's verdict counts only if the breaker has not opened or closed since the attempt was
admitted (``since``, its ``changes`` then): a stream or slow call the target accepted before it
started failing, ending well after the breaker opened, does not close it (only the probe, or a
call admitted while it was open, may), and one that fails late does not reopen it while the
probe runs.

A failure is what says the target, not the request, is unwell: a 5xx, a timeout, a refused or
broken connection. A 429 (capacity), a 4xx (the request), a cancelled call or a client's
shorter deadline passing (its choice) is not (``app.routing.router.unhealthy``; the config's
own deadline passing on a target that had at least half of it is a timeout:
``app.routing.router.verdict``). Each
process counts its own failures; with Redis, the openings, closings and half-open probes are
shared by every process (``app.routing.shared``), so one that opens a breaker opens
it everywhere, and one probe at a time tests the target for all of them. Without Redis, each
worker and replica learns on its own (with the default ``failures: 5``, a dead target then
costs each process five calls).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from app.config import BreakerConfig

State = Literal["closed", "open", "half_open"]
STATE_VALUE: dict[State, int] = {"closed": 0, "half_open": 1, "open": 2}
"""``switchboard_target_state``'s value for each state."""


@dataclass(slots=True)
class Breaker:
    config: BreakerConfig
    location: str = ""
    """Where its target's provider points (``app.routing.shared.location``): a provider a
    reload points elsewhere gets new breakers, and this one hears only of the calls that ran
    on this location."""
    clock: Callable[[], float] = time.monotonic
    state: State = "closed"
    consecutive: int = 0
    cooldown_s: float = 0.0
    """The current open period (doubles on each failed probe)."""
    opened_at: float = 0.0
    probing: bool = False
    """A half-open probe is in flight."""
    changes: int = 0
    """How many times it opened or closed (its own verdicts and adopted ones): a caller that
    awaited something (``Router.admit``, a shared probe claim) tells from it whether a verdict
    arrived meanwhile, which then stands."""
    recent: deque[tuple[float, bool]] = field(default_factory=deque)
    """(time, failed) of the attempts of the last ``window_s``."""

    def blocked(self) -> bool:
        """Whether calls skip the target now (open and cooling down, or half-open with its one
        probe in flight); asks without taking a probe."""
        if self.state == "open":
            return self.clock() - self.opened_at < self.cooldown_s
        return self.state == "half_open" and self.probing

    def available(self) -> bool:
        """Whether a call may try the target now; in half-open, the first caller takes the
        probe (and must report its outcome)."""
        if self.state == "closed":
            return True
        if self.state == "open":
            if self.clock() - self.opened_at < self.cooldown_s:
                return False
            self.state, self.probing = "half_open", False
        if self.probing:
            return False
        self.probing = True
        return True

    def stale(self, since: int | None) -> bool:
        """Whether the verdict of an attempt admitted when ``changes`` was ``since`` comes after
        the breaker opened or closed (``None``: not known, it counts)."""
        return since is not None and since != self.changes

    def succeeded(self, since: int | None = None) -> None:
        """An attempt admitted at ``since`` (``changes`` then) succeeded: ignored if stale."""
        if self.stale(since):
            return
        self._note(False)
        self.consecutive = 0
        if self.state != "closed":
            self._close()

    def failed(self, since: int | None = None) -> None:
        """An attempt admitted at ``since`` (``changes`` then) failed: ignored if stale."""
        if self.stale(since):
            return
        self._note(True)
        self.consecutive += 1
        if self.state == "half_open":
            self._open(min(self.config.max_cooldown_s, max(self.cooldown_s * 2,
                                                           self.config.cooldown_s)))
        elif self.state == "closed" and self._tripped():
            self._open(self.config.cooldown_s)

    def released(self, since: int | None = None) -> None:
        """A probe that ended with no verdict (the client left, a 4xx): let another try (not
        for an attempt admitted before the breaker last opened or closed: not the probe)."""
        if not self.stale(since):
            self.probing = False

    def adopt_open(self, cooldown_s: float, opened_at: float) -> None:
        """Another process opened it (or its probe failed) at ``opened_at`` (this clock's
        time) for ``cooldown_s``."""
        self._open(cooldown_s)
        self.opened_at = opened_at

    def adopt_closed(self) -> None:
        """Another process's probe succeeded."""
        self._close()
        self.consecutive = 0

    def _tripped(self) -> bool:
        if self.consecutive >= self.config.failures:
            return True
        if len(self.recent) < self.config.min_calls:
            return False
        failed = sum(1 for _, bad in self.recent if bad)
        return failed / len(self.recent) >= self.config.error_rate

    def _open(self, cooldown_s: float) -> None:
        self.state, self.probing = "open", False
        self.cooldown_s = cooldown_s
        self.opened_at = self.clock()
        self.changes += 1

    def _close(self) -> None:
        self.state, self.probing, self.cooldown_s = "closed", False, 0.0
        self.recent.clear()
        self.changes += 1

    def _note(self, bad: bool) -> None:
        now = self.clock()
        self.recent.append((now, bad))
        horizon = now - self.config.window_s
        while self.recent and self.recent[0][0] < horizon:
            self.recent.popleft()
