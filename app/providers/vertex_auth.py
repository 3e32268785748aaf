"""OAuth2 access tokens for Vertex AI, from google-auth credentials, cached and refreshed.

The credentials are a service-account key (a file path, or the key's JSON as a secret) or,
when neither is given, Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``,
gcloud's user credentials, the metadata server of GCE / GKE / Cloud Run), all for the
``cloud-platform`` scope. google-auth is synchronous (its refresh posts to a token endpoint or
asks the metadata server over ``requests``), so resolving and refreshing run in a worker thread
(``asyncio.to_thread``), never on the event loop. ``AccessTokens`` keeps the current token:
a call takes it without waiting while it is fresh; within ``REFRESH_MARGIN_S`` of its expiry
(or half its lifetime, if shorter) one background refresh starts and callers keep the old
token; only when there is no valid token do callers wait, all on that one refresh.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from app import errors
from app.scrub import Scrubber

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

log = logging.getLogger(__name__)

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
REFRESH_MARGIN_S = 300.0
"""Refresh this long before expiry (google-auth's own clock skew is 3m45s; Google's tokens
last an hour)."""
RETRY_S = 10.0
"""After a failed background refresh, how long a still-valid token is used before retrying."""


def require_google_auth(kind: str = "vertex") -> None:
    """Refuse a config of type ``kind`` at load when google-auth is not installed."""
    try:
        import google.auth
        import google.auth.transport.requests  # noqa: F401
    except ImportError:
        raise ValueError(f"type {kind} needs google-auth: install switchboard[google]") \
            from None


def load_credentials(*, key_file: str | None, key_json: str | None) -> Credentials:
    """The credentials the config names (blocking: file reads, ADC discovery; call it in a
    worker thread)."""
    import google.auth
    from google.oauth2 import service_account

    # google-auth's classmethods are unannotated
    if key_file is not None:
        found: Credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
            key_file, scopes=SCOPES)
        return found
    if key_json is not None:
        import json

        found = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            json.loads(key_json), scopes=SCOPES)
        return found
    credentials, _ = google.auth.default(scopes=SCOPES)
    return credentials


@dataclass(frozen=True, slots=True)
class Token:
    value: str
    expires_at: float
    refresh_at: float


class TokenUnavailable(Exception):
    """google-auth could not produce a token (its error, on one line)."""


Fetch = Callable[[], tuple[str, float]]
"""Blocking: a new token and its expiry (epoch seconds); raises ``TokenUnavailable``."""


def credentials_fetch(make: Callable[[], Credentials]) -> Fetch:
    """A ``Fetch`` over google-auth: credentials made on first use, refreshed with one
    ``requests`` transport (one refresh runs at a time, so it is never shared by threads)."""
    state: dict[str, Any] = {}

    def fetch() -> tuple[str, float]:
        from google.auth.exceptions import GoogleAuthError
        from google.auth.transport.requests import Request

        try:
            if "credentials" not in state:
                state["credentials"] = make()
                state["request"] = Request()
            credentials = state["credentials"]
            credentials.refresh(state["request"])
        except (GoogleAuthError, ValueError, OSError, KeyError) as exc:
            text = str(exc).strip()
            detail = text.splitlines()[0][:400] if text else "no detail"
            raise TokenUnavailable(f"{type(exc).__name__}: {detail}") from None
        expiry: datetime | None = credentials.expiry
        if not isinstance(credentials.token, str) or expiry is None:
            raise TokenUnavailable("the credentials gave no token or no expiry")
        # google-auth keeps expiry as a naive datetime in UTC
        return credentials.token, expiry.replace(tzinfo=UTC).timestamp()

    return fetch


class AccessTokens:
    """The current access token of one credential, refreshed before it expires, one refresh at
    a time, in a worker thread. ``clock`` gives epoch seconds (tests pass their own)."""

    def __init__(self, fetch: Fetch, *, describe: str, scrubber: Scrubber,
                 clock: Callable[[], float] = time.time,
                 margin_s: float = REFRESH_MARGIN_S) -> None:
        self._fetch = fetch
        self._describe = describe
        self._scrubber = scrubber
        self._clock = clock
        self._margin_s = margin_s
        self._token: Token | None = None
        self._refreshing: asyncio.Task[Token] | None = None
        self.refreshes = 0
        """Token requests made (succeeded or not)."""

    def fresh(self) -> Token | None:
        """The current token if no refresh is due (no await: the per-call fast path)."""
        token = self._token
        return token if token is not None and self._clock() < token.refresh_at else None

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
        # shield: a caller that goes away must not cancel the refresh others wait for
        return await asyncio.shield(self._refresh())

    def _refresh(self) -> asyncio.Task[Token]:
        task = self._refreshing
        if task is None:
            task = self._refreshing = asyncio.get_running_loop().create_task(self._renew())
            task.add_done_callback(_log_failure)
        return task

    async def _renew(self) -> Token:
        self.refreshes += 1
        try:
            try:
                value, expires_at = await asyncio.to_thread(self._fetch)
            except TokenUnavailable as exc:
                self._back_off()
                raise self._failed(exc) from None
            now = self._clock()
            lifetime = max(0.0, expires_at - now)
            self._token = Token(value=value, expires_at=expires_at,
                                refresh_at=expires_at - min(self._margin_s, lifetime / 2))
            return self._token
        finally:
            self._refreshing = None

    def _back_off(self) -> None:
        old = self._token
        if old is not None:
            self._token = Token(value=old.value, expires_at=old.expires_at,
                                refresh_at=min(old.expires_at, self._clock() + RETRY_S))

    def _failed(self, exc: TokenUnavailable) -> errors.UpstreamError:
        error = errors.UpstreamError(f"{self._describe}: could not get a Google access token: "
                                     f"{exc}")
        scrubbed = self._scrubber.error(error)
        assert isinstance(scrubbed, errors.UpstreamError)
        return scrubbed

    async def aclose(self) -> None:
        """Cancel a refresh in progress (its thread finishes on its own)."""
        task = self._refreshing
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _log_failure(task: asyncio.Task[Token]) -> None:
    """Log a refresh's failure (and mark it retrieved: a background refresh has no awaiter)."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("Google access token refresh failed: %s", task.exception())
