"""Azure OpenAI's Entra ID side without a network: the ``auth`` config, and the token cache's
refresh schedule against a clock the tests control."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app import errors
from app.config import ConfigError, parse_config
from app.providers import azure_auth
from app.providers.azure import AzureOpenAIProvider
from app.providers.azure_auth import BearerTokens
from app.providers.tokens import TokenUnavailable
from app.scrub import Scrubber

SECRET = "entra-client-secret-0123456789"
ENDPOINT = "https://res.openai.azure.com"
CLIENT_SECRET_AUTH = {"type": "client_secret", "tenant_id": "t", "client_id": "c",
                      "client_secret": SECRET}


def validate(**fields: Any) -> AzureOpenAIProvider:
    return AzureOpenAIProvider.model_validate(
        {"type": "azure_openai", "endpoint": ENDPOINT, **fields})


def test_api_key_or_auth_exactly_one() -> None:
    """Neither api_key nor auth, or both, is a config error naming both fields."""
    for fields in ({}, {"api_key": "k", "auth": CLIENT_SECRET_AUTH}):
        with pytest.raises(ValidationError, match=r"exactly one of api_key .* or auth"):
            validate(**fields)
    assert validate(api_key="k").auth is None
    assert validate(auth=CLIENT_SECRET_AUTH).api_key is None


def test_auth_types_and_their_fields(tmp_path: Path) -> None:
    """Each auth type takes its own fields; unknown types and keys are refused."""
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    config = validate(auth={**CLIENT_SECRET_AUTH, "authority": "https://login.microsoftonline.us",
                            "ca_bundle": str(ca)})
    assert isinstance(config.auth, azure_auth.ClientSecretAuth)
    assert config.auth.client_secret.get_secret_value() == SECRET
    assert SECRET not in repr(config)
    assert isinstance(validate(auth={"type": "workload_identity"}).auth,
                      azure_auth.WorkloadIdentityAuth)
    managed = validate(auth={"type": "managed_identity", "client_id": "mi"}).auth
    assert isinstance(managed, azure_auth.ManagedIdentityAuth) and managed.client_id == "mi"
    assert isinstance(validate(auth={"type": "default"}).auth, azure_auth.DefaultAuth)
    for bad in ({"type": "password"}, {**CLIENT_SECRET_AUTH, "scope": "x"},
                {"type": "client_secret", "tenant_id": "t", "client_id": "c"},
                {**CLIENT_SECRET_AUTH, "authority": "http://login.microsoftonline.com"},
                {**CLIENT_SECRET_AUTH, "ca_bundle": str(tmp_path / "missing.pem")},
                {**CLIENT_SECRET_AUTH, "tenant_id": "contoso tenant"}):
        with pytest.raises(ValidationError):
            validate(auth=bad)


@pytest.mark.parametrize(("auth", "env", "missing"), [
    ({}, {}, "tenant_id, client_id, token_file not given, and AZURE_TENANT_ID, AZURE_CLIENT_ID, "
             "AZURE_FEDERATED_TOKEN_FILE not set"),
    ({"client_id": "c"}, {"AZURE_TENANT_ID": "t", "AZURE_FEDERATED_TOKEN_FILE": ""},
     "token_file not given, and AZURE_FEDERATED_TOKEN_FILE not set"),
    ({}, {"AZURE_TENANT_ID": "t", "AZURE_CLIENT_ID": "c", "AZURE_FEDERATED_TOKEN_FILE": "/t"},
     None),
    ({"tenant_id": "t", "client_id": "c", "token_file": "/t"}, {}, None),
], ids=["none", "one missing", "all from the environment", "all given"])
def test_workload_identity_needs_each_setting_or_its_variable(
        auth: dict[str, str], env: dict[str, str], missing: str | None) -> None:
    """A workload identity setting neither given nor in the environment the config loads with
    is a config error naming the settings and their variables (azure-identity refused it only
    when the credential was built, with a plain ValueError)."""
    raw = {"providers": {"azp": {"type": "azure_openai", "endpoint": ENDPOINT,
                                 "auth": {"type": "workload_identity", **auth}}},
           "models": {"az": {"targets": [{"provider": "azp", "model": "gpt-4o"}]}}}
    if missing is None:
        assert isinstance(parse_config(raw, env).providers["azp"], AzureOpenAIProvider)
        return
    with pytest.raises(ConfigError) as refused:
        parse_config(raw, env)
    assert str(refused.value) == (f"providers.azp.auth: workload_identity: {missing} in the "
                                  "environment (AKS's workload identity webhook sets them)")


def test_a_credential_azure_identity_refuses_is_a_config_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What azure-identity refuses when the credential is made (a setting it reads from the
    environment) is a ``ConfigError`` saying why, not a plain ValueError."""
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "bogus")
    auth = validate(auth={"type": "default"}).auth
    assert auth is not None
    with pytest.raises(ConfigError, match=r"^auth default: Invalid value for "
                                          r"AZURE_TOKEN_CREDENTIALS: bogus\."):
        azure_auth.credential(auth)


def test_auth_without_azure_identity_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """With azure-identity missing, auth is refused at load naming the extra; api_key is not."""
    monkeypatch.setitem(sys.modules, "azure.identity.aio", None)
    with pytest.raises(ValidationError, match=r"switchboard\[azure\]"):
        validate(auth=CLIENT_SECRET_AUTH)
    assert validate(api_key="k").api_key is not None


def test_secrets_include_the_client_secret() -> None:
    """The nested client secret is among the secrets scrubbed from errors."""
    assert SECRET in validate(auth=CLIENT_SECRET_AUTH).secrets()
    assert validate(api_key="the-api-key-0123").secrets() == ("the-api-key-0123",)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Issuer:
    """A token source: token-N lasting ``lifetime`` from the clock's now; can be held or fail."""

    def __init__(self, clock: Clock, lifetime: float = 3600.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls = 0
        self.release: asyncio.Event | None = None
        self.failure: str | None = None
        self.same = False
        """Hand back the first token (as azure-identity's own cache does within 30 s)."""
        self.first: tuple[str, float] | None = None

    async def __call__(self) -> tuple[str, float]:
        self.calls += 1
        if self.release is not None:
            await self.release.wait()
        if self.failure is not None:
            raise TokenUnavailable(self.failure)
        if self.same and self.first is not None:
            return self.first
        self.first = self.first or (f"token-{self.calls}", self.clock.now + self.lifetime)
        return f"token-{self.calls}", self.clock.now + self.lifetime


def tokens(issuer: Issuer, clock: Clock) -> BearerTokens:
    return BearerTokens(issuer, describe="azure_openai provider at res.openai.azure.com",
                        scrubber=Scrubber([SECRET]), clock=clock)


async def test_token_cached_until_five_minutes_before_expiry() -> None:
    """One fetch serves every call until 300 s before expiry; fresh() needs no await."""
    clock = Clock()
    issuer = Issuer(clock)
    cache = tokens(issuer, clock)
    assert cache.fresh() is None
    first = await cache.get()
    assert first.header == "Bearer token-1"
    assert first.refresh_at == first.expires_at - 300
    clock.now += 3600 - 301
    assert cache.fresh() is first
    assert await cache.get() is first
    assert issuer.calls == 1


async def test_due_token_refreshed_once_in_the_background() -> None:
    """Past refresh_at the valid token keeps serving while exactly one refresh runs."""
    clock = Clock()
    issuer = Issuer(clock)
    cache = tokens(issuer, clock)
    first = await cache.get()
    clock.now = first.refresh_at + 1
    issuer.release = asyncio.Event()
    served = [await cache.get() for _ in range(5)]
    assert all(token is first for token in served)
    await asyncio.sleep(0)  # the refresh task starts
    assert (await cache.get()) is first
    assert issuer.calls == 2
    issuer.release.set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    second = await cache.get()
    assert second.header == "Bearer token-2"
    assert second.expires_at == clock.now + 3600
    assert issuer.calls == 2


async def test_concurrent_calls_without_a_token_share_one_refresh() -> None:
    """Twenty calls that find no valid token wait for the same single fetch."""
    clock = Clock()
    issuer = Issuer(clock)
    issuer.release = asyncio.Event()
    cache = tokens(issuer, clock)
    waiting = [asyncio.create_task(cache.get()) for _ in range(20)]
    await asyncio.sleep(0)
    issuer.release.set()
    got = await asyncio.gather(*waiting)
    assert {token.value for token in got} == {"token-1"}
    assert issuer.calls == 1
    clock.now += 3600  # expired: the next calls wait again, on one fetch
    got = await asyncio.gather(*(cache.get() for _ in range(20)))
    assert {token.value for token in got} == {"token-2"}
    assert issuer.calls == 2


async def test_short_lived_token_refreshed_at_half_its_life() -> None:
    """A token living less than ten minutes is refreshed at half its lifetime."""
    clock = Clock()
    cache = tokens(Issuer(clock, lifetime=100), clock)
    token = await cache.get()
    assert token.refresh_at == clock.now + 50


async def test_cancelled_caller_does_not_cancel_the_refresh() -> None:
    """A caller that goes away leaves the shared refresh running for the others."""
    clock = Clock()
    issuer = Issuer(clock)
    issuer.release = asyncio.Event()
    cache = tokens(issuer, clock)
    leaving = asyncio.create_task(cache.get())
    staying = asyncio.create_task(cache.get())
    await asyncio.sleep(0)
    leaving.cancel()
    await asyncio.sleep(0)
    issuer.release.set()
    assert (await staying).value == "token-1"
    assert leaving.cancelled()
    assert issuer.calls == 1


async def test_failed_refresh_is_a_502_naming_the_provider_without_the_secret() -> None:
    """A credential failure is an UpstreamAuthFailed (502, the next target may serve the call)
    naming the provider, secret scrubbed."""
    clock = Clock()
    issuer = Issuer(clock)
    issuer.failure = f"ClientAuthenticationError: AADSTS7000215: Invalid client secret {SECRET}"
    cache = tokens(issuer, clock)
    with pytest.raises(errors.UpstreamError) as caught:
        await cache.get()
    assert type(caught.value) is errors.UpstreamAuthFailed
    assert caught.value.status_code == 502
    assert "azure_openai provider at res.openai.azure.com" in caught.value.message
    assert "AADSTS7000215" in caught.value.message
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value.body())


async def test_failed_background_refresh_keeps_the_token_and_backs_off() -> None:
    """A failed early refresh keeps the valid token and waits 30 s before trying again."""
    clock = Clock()
    issuer = Issuer(clock)
    cache = tokens(issuer, clock)
    first = await cache.get()
    clock.now = first.refresh_at + 1
    issuer.failure = "ServiceRequestError: cannot connect"
    assert (await cache.get()).value == first.value
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert issuer.calls == 2
    kept = await cache.get()
    assert kept.value == first.value and kept.refresh_at == clock.now + 30
    assert issuer.calls == 2
    issuer.failure = None
    clock.now += 31
    await cache.get()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert (await cache.get()).value == "token-3"


async def test_same_token_again_waits_before_asking_again() -> None:
    """When the credential hands back the token it had, the next try is 30 s later (or at
    expiry), not on every call."""
    clock = Clock()
    issuer = Issuer(clock, lifetime=20)
    issuer.same = True
    cache = tokens(issuer, clock)
    first = await cache.get()
    clock.now = first.refresh_at + 1
    await cache.get()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    again = await cache.get()
    assert again.value == first.value and again.refresh_at == first.expires_at
    assert issuer.calls == 2


async def test_recent_keeps_the_last_three_tokens_once_each() -> None:
    """``recent()`` (scrubbed from upstream errors) holds the last three distinct tokens, the
    ones replaced included; the same token handed back again is not counted twice."""
    clock = Clock()
    issuer = Issuer(clock, lifetime=100)
    cache = tokens(issuer, clock)
    assert cache.recent() == ()
    for _ in range(4):
        await cache.get()
        clock.now += 101  # expired: the next get waits for a new one
    assert cache.recent() == ("token-2", "token-3", "token-4")
    issuer.same, issuer.first = True, ("token-4", clock.now + 100)
    await cache.get()
    assert cache.recent() == ("token-2", "token-3", "token-4")
