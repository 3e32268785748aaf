"""Short-lived bearer tokens for providers that authenticate with them (Azure OpenAI with Entra
ID, Google Vertex AI): the current token of one credential, refreshed before it expires, one
refresh at a time, never on the caller's path once a token is held.

- ``fresh()`` is the per-call fast path: the token while no refresh is due, with no await.
- ``get()``: past ``refresh_at`` the current token still serves while one background refresh
  runs; with no valid token, every caller awaits that same refresh (shielded: a caller that goes
  away does not cancel it for the others).
- A token is refreshed ``margin_s`` before it expires (half its lifetime when shorter). A
  credential that hands back the same token again (client libraries cache them) is asked again
  only after ``retry_s``; after a failure, a still-valid token is kept for ``retry_s``.
- A failure is an ``UpstreamAuthFailed`` (502; the next target may serve the call) naming the
  provider and what it could not get, with every secret the provider holds scrubbed from it.
- ``refused(value)``: the upstream refused the token (401: revoked or disabled before its
  expiry, e.g. by Entra's continuous access evaluation): the current token, if it is that one,
  is dropped so the next call awaits a new one, rather than being sent until its refresh time
  (up to an hour of 502s). ``refusing`` wraps an upstream's error mapper to report it. A token
  fetched less than ``retry_s`` ago is kept: a credential whose new tokens are refused too is not
  asked more than once per ``retry_s``.
- ``recent()``: the last ``RECENT_TOKENS`` token values, which the gateway scrubs from upstream
  errors (a call keeps the token it was sent with, so the one before the current still travels).

``clock`` gives epoch seconds, so tests drive expiry with a clock of their own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from app import errors
from app.scrub import Scrubber

log = logging.getLogger("switchboard.providers")

REFRESH_MARGIN_S = 300.0
"""How long before its expiry a token is replaced (the client libraries' own margin)."""

RECENT_TOKENS = 3
"""Token values ``recent()`` keeps: three span at least two refresh intervals (about 110 minutes
with Google's and Entra's tokens, which last an hour or more), so only a call that has run that
long can carry a token no longer kept."""

Fetch = Callable[[], Awaitable[tuple[str, float]]]
ErrorMapper = Callable[[int, Any, str], errors.GatewayError]
"""``app.providers.http.ErrorMapper`` (named again here: ``http`` need not be imported)."""
"""Gets a new token: (token, expiry in epoch seconds); raises ``TokenUnavailable``."""


@dataclass(frozen=True, slots=True)
class Token:
    """One bearer token: its value, its expiry and when to refresh it (epoch seconds)."""

    value: str
    expires_at: float
    refresh_at: float

    @property
    def header(self) -> str:
        return f"Bearer {self.value}"


class TokenUnavailable(Exception):
    """The credential could not produce a token (its error, summarized on one line)."""


def summary(exc: BaseException) -> str:
    """An exception as one bounded line, for ``TokenUnavailable``."""
    text = str(exc).strip()
    detail = text.splitlines()[0][:400] if text else "no detail"
    return f"{type(exc).__name__}: {detail}"


class TokenCache:
    """The current token of one credential (see the module docstring). ``what`` says what it
    fetches, in errors ("a Google access token"); ``describe`` names the provider."""

    def __init__(self, fetch: Fetch, *, describe: str, what: str, scrubber: Scrubber,
                 clock: Callable[[], float] = time.time, margin_s: float = REFRESH_MARGIN_S,
                 retry_s: float = 30.0) -> None:
        self._fetch = fetch
        self._describe = describe
        self._what = what
        self._scrubber = scrubber
        self._clock = clock
        self._margin_s = margin_s
        self._retry_s = retry_s
        self._token: Token | None = None
        self._refreshing: asyncio.Task[Token] | None = None
        self._recent: deque[str] = deque(maxlen=RECENT_TOKENS)
        self._fetched_at = float("-inf")
        self.refreshes = 0
        """Token requests made (succeeded or not)."""

    def fresh(self) -> Token | None:
        """The current token if no refresh is due; otherwise None (then await ``get``)."""
        token = self._token
        return token if token is not None and self._clock() < token.refresh_at else None

    def refused(self, value: str) -> None:
        """The upstream refused token ``value`` with a 401: drop it if it is the current one
        and was fetched ``retry_s`` ago or more (see the module docstring)."""
        token = self._token
        now = self._clock()
        if token is None or token.value != value or now - self._fetched_at < self._retry_s:
            return
        log.warning("%s refused by the upstream; a new one is fetched", self._what)
        self._token = Token(value=value, expires_at=now, refresh_at=now)

    def refusing(self, mapper: ErrorMapper, value: str) -> ErrorMapper:
        """``mapper``, reporting a 401 answered to a call sent with token ``value``."""
        def map_error(status: int, payload: Any, text: str) -> errors.GatewayError:
            if status == 401:
                self.refused(value)
            return mapper(status, payload, text)
        return map_error

    def recent(self) -> tuple[str, ...]:
        """The values of the last ``RECENT_TOKENS`` tokens, newest last."""
        return tuple(self._recent)

    async def get(self) -> Token:
        """A valid token: the current one (starting a background refresh when one is due), or
        the one the shared refresh brings when none is valid."""
        token = self._token
        if token is not None:
            now = self._clock()
            if now < token.refresh_at:
                return token
            if now < token.expires_at:
                self._refresh()
                return token
        return await asyncio.shield(self._refresh())

    def _refresh(self) -> asyncio.Task[Token]:
        task = self._refreshing
        if task is None:
            task = self._refreshing = asyncio.get_running_loop().create_task(self._renew())
            task.add_done_callback(self._log_failure)
        return task

    async def _renew(self) -> Token:
        self.refreshes += 1
        try:
            try:
                value, expires_at = await self._fetch()
            except TokenUnavailable as exc:
                self._back_off()
                raise self._failed(exc) from None
            now = self._fetched_at = self._clock()
            lifetime = max(0.0, expires_at - now)
            refresh_at = expires_at - min(self._margin_s, lifetime / 2)
            old = self._token
            if old is not None and old.value == value:  # the library's cached token again
                refresh_at = min(expires_at, now + self._retry_s)
            else:
                self._recent.append(value)
            self._token = Token(value=value, expires_at=expires_at, refresh_at=refresh_at)
            return self._token
        finally:
            self._refreshing = None

    def _back_off(self) -> None:
        """After a failure, keep a still-valid token without asking again for ``retry_s``."""
        old = self._token
        if old is not None:
            self._token = Token(value=old.value, expires_at=old.expires_at,
                                refresh_at=min(old.expires_at, self._clock() + self._retry_s))

    def _failed(self, exc: TokenUnavailable) -> errors.UpstreamAuthFailed:
        error = errors.UpstreamAuthFailed(f"{self._describe}: could not get {self._what}: {exc}")
        scrubbed = self._scrubber.error(error)
        assert isinstance(scrubbed, errors.UpstreamAuthFailed)
        return scrubbed

    def _log_failure(self, task: asyncio.Task[Token]) -> None:
        """Log a refresh's failure (and mark it retrieved: a background refresh has no
        awaiter; the calls that awaited one get it raised as well)."""
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s refresh failed: %s", self._what, task.exception())

    async def aclose(self) -> None:
        """Cancel a refresh in progress."""
        task = self._refreshing
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
