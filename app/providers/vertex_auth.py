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
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from app.providers.tokens import REFRESH_MARGIN_S, TokenCache, TokenUnavailable, summary
from app.scrub import Scrubber

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
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
            raise TokenUnavailable(summary(exc)) from None
        expiry: datetime | None = credentials.expiry
        if not isinstance(credentials.token, str) or expiry is None:
            raise TokenUnavailable("the credentials gave no token or no expiry")
        # google-auth keeps expiry as a naive datetime in UTC
        return credentials.token, expiry.replace(tzinfo=UTC).timestamp()

    return fetch


class AccessTokens(TokenCache):
    """The access token of one set of Google credentials
    (``app.providers.tokens.TokenCache``), fetched in a worker thread (google-auth blocks)."""

    def __init__(self, fetch: Fetch, *, describe: str, scrubber: Scrubber,
                 clock: Callable[[], float] = time.time,
                 margin_s: float = REFRESH_MARGIN_S) -> None:
        async def in_thread() -> tuple[str, float]:
            return await asyncio.to_thread(fetch)

        super().__init__(in_thread, describe=describe, what="a Google access token",
                         scrubber=scrubber, clock=clock, margin_s=margin_s, retry_s=RETRY_S)
