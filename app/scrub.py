"""Credentials never leave the gateway: every string taken from an upstream error (its message,
``param`` and ``code``, non-streaming or mid-stream) is scrubbed of the configured provider
secrets before a client or the call log sees it."""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydantic import BaseModel, SecretStr

from app import errors

REDACTED = "[redacted]"
_SECRET_HEADER = re.compile(r"auth|key|token|secret|signature", re.IGNORECASE)
_MIN_SECRET = 4
"""Shorter values are not scrubbed: replacing every "a" in a message hides nothing."""


def config_secrets(providers: Iterable[BaseModel]) -> tuple[str, ...]:
    """Every credential in the provider configs: ``SecretStr`` fields, and the values of extra
    headers whose name says they carry one (``Authorization``, ``x-api-key``...)."""
    found: set[str] = set()
    for provider in providers:
        for name in type(provider).model_fields:
            value = getattr(provider, name)
            if isinstance(value, SecretStr):
                found.add(value.get_secret_value())
        headers = getattr(provider, "headers", None) or {}
        for header, value in headers.items():
            if _SECRET_HEADER.search(header):
                found.add(value)
                # "Bearer sk-..." is also echoed as the bare token
                found.add(value.split(" ", 1)[-1])
    # longest first, so that a secret containing another is replaced whole
    return tuple(sorted((s for s in found if len(s) >= _MIN_SECRET), key=len, reverse=True))


class Scrubber:
    """Replaces known secrets in strings; cheap when there are none to find."""

    __slots__ = ("secrets",)

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = tuple(s for s in secrets if len(s) >= _MIN_SECRET)

    def text(self, value: str) -> str:
        for secret in self.secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value

    def error(self, exc: errors.GatewayError) -> errors.GatewayError:
        """Scrub ``exc`` in place (message, param, code, and ``str(exc)``) and return it."""
        if not self.secrets:
            return exc
        exc.message = self.text(exc.message)
        exc.args = (exc.message,)  # str(exc), as logs and tracebacks show it
        if exc.param is not None:
            exc.param = self.text(exc.param)
        if exc.code is not None:
            exc.code = self.text(exc.code)
        return exc
