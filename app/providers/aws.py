"""What the AWS provider types (``bedrock``, ``sagemaker``) share: their credential fields,
credentials resolved (botocore's chain) and refreshed off the event loop, and SigV4 signing
(our own, checked against botocore's).

Credentials, in the order they are looked for:

- ``access_key_id`` / ``secret_access_key`` (and ``session_token``) in the config, as secrets;
- otherwise botocore's own chain (``botocore.session.Session(profile=...).get_credentials()``):
  environment variables, the shared credentials/config files (``profile``; SSO and
  ``credential_process`` included), web identity (EKS/IRSA), container and instance roles.

Resolving the chain may touch the network (STS, the metadata servers) and botocore's refresh is
blocking, so it runs in a worker thread (``asyncio.to_thread``), one refresh at a time
(``CredentialCache``). The frozen credentials are cached: static ones for good; refreshable
ones (roles, SSO, processes) until ``credential_check_s`` has passed, when botocore is asked
again (it refreshes them itself from 15 minutes before they expire, so a check a minute keeps
them fresh without us reading its private expiry). A resolver may also give an explicit
expiry: the cache then refreshes ``REFRESH_MARGIN_S`` before it.

Signing (``SigV4Signer``) is CPU only, over the exact method, URL, headers and body bytes the
gateway then sends: SigV4 computed here and held to botocore's ``SigV4Auth`` in the tests (see
the class). botocore is the ``aws`` extra, imported only when a config asks for SigV4
(``require_botocore``), for its credential chain.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Protocol
from urllib.parse import parse_qsl, quote, urlsplit

from pydantic import Field, SecretStr, model_validator

from app import errors
from app.providers.base import ProviderBase

REFRESH_MARGIN_S = 300.0
"""How long before an explicit expiry the cache refreshes (AWS's SDKs use 5 to 15 minutes)."""
RECENT_CREDENTIALS = 3
"""Sets of credentials ``CredentialCache.recent`` keeps: a call keeps the set it was signed
with, so the ones before the current may still be echoed back (role sessions last an hour or
more, so three sets span at least two of botocore's refreshes)."""

Clock = Callable[[], float]


def require_botocore(kind: str) -> None:
    """Refuse a config that needs SigV4 when the ``aws`` extra is not installed."""
    try:
        import botocore.auth  # noqa: F401
    except ImportError:
        raise ValueError(f"type {kind} signs requests with botocore: install the 'aws' extra "
                         "(pip install 'switchboard[aws]')") from None


class AwsConfig(ProviderBase):
    """The fields every AWS provider type takes (``region`` required)."""

    region: Annotated[str, Field(min_length=1, pattern=r"^[a-z0-9-]+$")]
    base_url: str | None = None
    """Instead of the service's regional endpoint (a VPC endpoint, a proxy, the simulator)."""
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    profile: str | None = None
    """A profile of the shared AWS config files, for botocore's chain."""
    credential_check_s: Annotated[float, Field(gt=0)] = 60.0
    """How long refreshable credentials from botocore's chain are used before botocore is asked
    again (it refreshes them from 15 minutes before expiry)."""

    @model_validator(mode="after")
    def _credentials(self) -> AwsConfig:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key go together")
        if self.session_token is not None and self.access_key_id is None:
            raise ValueError("session_token needs access_key_id and secret_access_key")
        if self.uses_sigv4():
            require_botocore(self.type)
        return self

    def uses_sigv4(self) -> bool:
        """Whether requests are signed (every AWS type but a Bedrock API key)."""
        return True


@dataclass(frozen=True, slots=True)
class Frozen:
    """One set of credentials (the attribute names botocore's signer reads), and when the cache
    must look again (``None``: never)."""

    access_key: str
    secret_key: str
    token: str | None = None
    expires_at: float | None = None


class CredentialError(Exception):
    """The credential chain found nothing, or failed (the message names why, never a secret)."""


Resolver = Callable[[], Frozen]
"""Blocking: called in a worker thread."""


class BotocoreChain:
    """botocore's credential chain as a ``Resolver`` (blocking; see the module docstring)."""

    def __init__(self, *, profile: str | None, check_s: float, clock: Clock = time.time) -> None:
        self._profile = profile
        self._check_s = check_s
        self._clock = clock
        self._credentials: Any = None

    def __call__(self) -> Frozen:
        import botocore.credentials
        import botocore.exceptions
        import botocore.session

        try:
            if self._credentials is None:
                found = botocore.session.Session(profile=self._profile).get_credentials()
                if found is None:
                    raise CredentialError(
                        "no AWS credentials found (config keys, environment, shared profile, "
                        "web identity, container or instance role)")
                self._credentials = found
            frozen = self._credentials.get_frozen_credentials()
        except (botocore.exceptions.BotoCoreError, RuntimeError, OSError) as exc:
            raise CredentialError(f"AWS credentials could not be resolved: "
                                  f"{type(exc).__name__}") from None
        refreshable = isinstance(self._credentials, botocore.credentials.RefreshableCredentials)
        return Frozen(frozen.access_key, frozen.secret_key, frozen.token,
                      self._clock() + self._check_s if refreshable else None)


def static_resolver(config: AwsConfig) -> Resolver | None:
    """The config's own keys, when it has them."""
    if config.access_key_id is None or config.secret_access_key is None:
        return None
    frozen = Frozen(config.access_key_id.get_secret_value(),
                    config.secret_access_key.get_secret_value(),
                    None if config.session_token is None
                    else config.session_token.get_secret_value())
    return lambda: frozen


class CredentialCache:
    """Frozen credentials, refreshed in a worker thread before they expire, one refresh at a
    time (concurrent callers wait for it). ``clock`` is injectable for tests."""

    def __init__(self, resolve: Resolver, *, clock: Clock = time.time,
                 margin_s: float = REFRESH_MARGIN_S, label: str = "AWS") -> None:
        self._resolve = resolve
        self._clock = clock
        self._margin_s = margin_s
        self._label = label
        self._current: Frozen | None = None
        self._recent: deque[tuple[str, ...]] = deque(maxlen=RECENT_CREDENTIALS)
        self._lock = asyncio.Lock()
        self.refreshes = 0
        """How many times the resolver ran (for tests and metrics)."""

    def recent(self) -> tuple[str, ...]:
        """Every value (access key id, secret key, session token) of the last
        ``RECENT_CREDENTIALS`` distinct sets of credentials, for scrubbing."""
        return tuple(value for found in self._recent for value in found)

    def _fresh(self, found: Frozen | None) -> bool:
        if found is None:
            return False
        return found.expires_at is None or self._clock() < found.expires_at - self._margin_s

    async def get(self) -> Frozen:
        """Current credentials; an ``UpstreamAuthFailed`` (502) naming the provider when there are
        none to be had."""
        found = self._current
        if self._fresh(found):
            assert found is not None
            return found
        async with self._lock:
            found = self._current
            if self._fresh(found):
                assert found is not None
                return found
            self.refreshes += 1
            try:
                found = await asyncio.to_thread(self._resolve)
            except CredentialError as exc:
                stale = self._current
                if stale is not None and stale.expires_at is not None \
                        and self._clock() < stale.expires_at:
                    return stale  # refresh failed early: the old ones still work for now
                raise errors.UpstreamAuthFailed(f"{self._label}: {exc}",
                                                code="credentials_unavailable") from None
            self._current = found
            values = tuple(v for v in (found.access_key, found.secret_key, found.token) if v)
            if values not in self._recent:
                self._recent.append(values)
            return found


class Authorizer(Protocol):
    """What makes a request acceptable to AWS: SigV4 or a bearer API key."""

    async def headers(self, method: str, url: str, body: bytes,
                      headers: Mapping[str, str]) -> dict[str, str]: ...

    def minted_credentials(self) -> tuple[str, ...]:
        """The credentials it obtained at run time and may have sent lately (for scrubbing)."""
        ...


class SigV4Signer:
    """Signs requests with AWS Signature Version 4 for one service (``bedrock``, ``sagemaker``)
    and region, with credentials from a ``CredentialCache``.

    The signature is computed here, from the SigV4 specification, rather than by botocore's
    ``SigV4Auth``: building botocore's ``AWSRequest`` and its header machinery cost about 60 us
    of CPU a request (py-spy, ``bench/providers.py``), most of the issue's 100 us budget, where
    this costs a fraction (the day's signing key is derived once). It signs the same headers
    botocore would (every header given, ``host`` and ``x-amz-date``, and the session token),
    and tests/providers/test_bedrock.py holds it to botocore's signature for identical inputs,
    to AWS's published test vector and to the simulator's own verifier.
    """

    def __init__(self, credentials: CredentialCache, *, service: str, region: str) -> None:
        self.credentials = credentials
        self.service = service
        self.region = region
        self._keys: dict[tuple[str, str], bytes] = {}
        """(secret, date) -> the derived signing key (one a day per secret)."""
        self._canonical: dict[str, tuple[str, str]] = {}
        """URL -> (host, canonical URI and query), for the URLs this provider calls."""

    def _key(self, secret: str, date: str) -> bytes:
        key = self._keys.get((secret, date))
        if key is None:
            if len(self._keys) > 8:
                self._keys.clear()
            key = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
            for part in (self.region, self.service, "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._keys[(secret, date)] = key
        return key

    def _target(self, url: str) -> tuple[str, str]:
        found = self._canonical.get(url)
        if found is None:
            parts = urlsplit(url)
            default = {"http": 80, "https": 443}.get(parts.scheme)
            host = parts.hostname or ""
            if parts.port is not None and parts.port != default:
                host = f"{host}:{parts.port}"
            # Every service but S3 signs the path URI-encoded once more (a %3A becomes %253A).
            path = quote(parts.path or "/", safe="/~")
            query = "&".join(sorted(
                f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
                for k, v in parse_qsl(parts.query, keep_blank_values=True)))
            if len(self._canonical) > 1024:
                self._canonical.clear()
            found = self._canonical[url] = (host, f"{path}\n{query}")
        return found

    def sign(self, credentials: Frozen, method: str, url: str, body: bytes,
             headers: Mapping[str, str], *, now: float | None = None) -> dict[str, str]:
        """``headers`` plus ``X-Amz-Date``, ``X-Amz-Security-Token`` (with a session token) and
        ``Authorization``, over exactly these method, URL, headers and body (``now``: the
        signing time, for tests)."""
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        date = amz_date[:8]
        host, target = self._target(url)
        out = dict(headers)
        out["X-Amz-Date"] = amz_date
        if credentials.token:
            out["X-Amz-Security-Token"] = credentials.token
        signed = {name.lower(): " ".join(str(value).split()) for name, value in out.items()
                  if name.lower() not in _UNSIGNED}
        signed["host"] = host
        names = sorted(signed)
        canonical_headers = "".join(f"{name}:{signed[name]}\n" for name in names)
        signed_headers = ";".join(names)
        canonical = (f"{method}\n{target}\n{canonical_headers}\n{signed_headers}\n"
                     f"{hashlib.sha256(body).hexdigest()}")
        scope = f"{date}/{self.region}/{self.service}/aws4_request"
        to_sign = (f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n"
                   f"{hashlib.sha256(canonical.encode()).hexdigest()}")
        signature = hmac.new(self._key(credentials.secret_key, date), to_sign.encode(),
                             hashlib.sha256).hexdigest()
        out["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
                                f"SignedHeaders={signed_headers}, Signature={signature}")
        return out

    async def headers(self, method: str, url: str, body: bytes,
                      headers: Mapping[str, str]) -> dict[str, str]:
        return self.sign(await self.credentials.get(), method, url, body, headers)

    def minted_credentials(self) -> tuple[str, ...]:
        return self.credentials.recent()


_UNSIGNED = frozenset({"authorization", "user-agent", "expect", "x-amzn-trace-id",
                       "x-amz-user-agent", "transfer-encoding", "connection"})
"""Headers never signed (as botocore leaves them out: proxies and SDKs may change them)."""


class BearerKey:
    """A static ``Authorization: Bearer`` API key (Bedrock API keys)."""

    def __init__(self, key: str) -> None:
        self._authorization = f"Bearer {key}"

    async def headers(self, method: str, url: str, body: bytes,
                      headers: Mapping[str, str]) -> dict[str, str]:
        return {**headers, "Authorization": self._authorization}

    def minted_credentials(self) -> tuple[str, ...]:
        """None: the key is the config's own (scrubbed as such)."""
        return ()


def credential_cache(config: AwsConfig, *, label: str) -> CredentialCache:
    """The config's keys, else botocore's chain, behind one cache."""
    resolve = static_resolver(config) or BotocoreChain(profile=config.profile,
                                                       check_s=config.credential_check_s)
    return CredentialCache(resolve, label=label)
