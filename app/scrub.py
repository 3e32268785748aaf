"""Credentials never leave the gateway: every string taken from an upstream error (its message,
``param`` and ``code``, non-streaming or mid-stream) is scrubbed of the provider secrets before a
client or the call log sees it: the configured ones (``config_secrets``) and the minted ones,
which providers obtain while the gateway runs (access tokens, AWS credentials from botocore's
chain) and report through ``minted`` sources, read each time an error is scrubbed, and the ones
derived for one request, whatever their source: a SigV4 ``Signature=<hex>`` (``SIGNATURE``;
the AWS types also scrub the whole ``Authorization`` value they sent, ``app.providers.aws_http``).
The gateway's
own keys (virtual keys and the master key) are never stored either, wherever a client put one
(``OwnKeys``). And text from outside printed on one line (a log message, a CLI listing) cannot
forge another (``one_line``)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from pydantic import BaseModel, SecretStr

from app import errors

REDACTED = "[redacted]"
_MIN_SECRET = 4
"""Shorter values are not scrubbed: replacing every "a" in a message hides nothing."""
PLAIN_HEADERS = frozenset({
    "accept", "accept-encoding", "accept-language", "content-type", "user-agent",
    "anthropic-version", "anthropic-beta", "openai-beta",
})
"""The extra headers (lower case) whose values are protocol, never a credential: scrubbing
``application/json`` or an API version from every error message would only garble it."""


_CREDENTIAL_HEADER = re.compile(r"auth|key|token|secret|signature|pass|cookie|session|cred",
                                re.IGNORECASE)
"""Headers named as credentials: their values are scrubbed whatever their length (from 4)."""
_MIN_UNNAMED_SECRET = 16
"""Another header's value is scrubbed from this length: a credential in a header named
otherwise (``X-Api``, ``X-Sig``) is rarely shorter, and a label (``X-Who: private``,
``X-Team: acme``) rarely longer, whose every mention scrubbing would garble messages."""


def config_secrets(providers: Iterable[BaseModel]) -> tuple[str, ...]:
    """Every credential in the provider configs: ``SecretStr`` fields, and the extra headers'
    values but the ``PLAIN_HEADERS``': all of a header named as a credential
    (``Authorization``, ``Cookie``, ``X-Password``...), others from 16 characters (any header
    may carry one, as ``app.config_diff`` also holds). A value under 4 characters is never
    scrubbed (``_MIN_SECRET``)."""
    found: set[str] = set()
    for provider in providers:
        for name in type(provider).model_fields:
            value = getattr(provider, name)
            if isinstance(value, SecretStr):
                found.add(value.get_secret_value())
        headers = getattr(provider, "headers", None) or {}
        for header, value in headers.items():
            if header.lower() in PLAIN_HEADERS:
                continue
            if _CREDENTIAL_HEADER.search(header):
                found.update(_header_secrets(header, value))
            elif len(value) >= _MIN_UNNAMED_SECRET:
                found.update(s for s in _header_secrets(header, value)
                             if len(s) >= _MIN_UNNAMED_SECRET)
    # longest first, so that a secret containing another is replaced whole
    return tuple(sorted((s for s in found if len(s) >= _MIN_SECRET), key=len, reverse=True))


def _header_secrets(header: str, value: str) -> set[str]:
    """``value`` and the parts an upstream may echo alone: the bare token of "Bearer sk-...",
    and each ``name=value`` pair of a ``Cookie`` and its value."""
    found = {value, value.split(" ", 1)[-1]}
    if header.lower() == "cookie":
        for pair in value.split(";"):
            found.update((pair.strip(), pair.partition("=")[2].strip()))
    return found


SIGNATURE = re.compile(r"(?<=signature=)[0-9a-f]{64}(?![0-9a-f])", re.IGNORECASE)
"""A SigV4 signature (``Signature=`` of an ``Authorization`` header, ``X-Amz-Signature=`` of a
presigned URL): 64 hex digits an upstream or a proxy may echo from the request it refused. It
is no configured or minted value, being derived per request, yet with ``X-Amz-Date`` and the
body (which the client knows) it replays that signed request on the gateway's AWS account for
as long as AWS accepts the date (minutes), outside the key's limits and the call log."""


def _signatures(value: str) -> str:
    # A substring test first: most messages name no signature (any case: the regex's own).
    if "signature=" not in value.lower():
        return value
    return SIGNATURE.sub(REDACTED, value)


Minted = Callable[[], Iterable[str]]
"""A source of minted credentials: the ones a provider may have sent lately."""


class Scrubber:
    """Replaces known secrets in strings: the fixed ``secrets`` and, at each call, what the
    ``minted`` sources give, and any SigV4 signature (``SIGNATURE``); cheap when there are none
    to find."""

    __slots__ = ("minted", "secrets")

    def __init__(self, secrets: Iterable[str], *, minted: Iterable[Minted] = ()) -> None:
        self.secrets = tuple(s for s in secrets if len(s) >= _MIN_SECRET)
        self.minted = tuple(minted)

    def current(self) -> tuple[str, ...]:
        """Every secret to replace now, longest first (a secret containing another is replaced
        whole)."""
        if not self.minted:
            return self.secrets
        found = set(self.secrets)
        for source in self.minted:
            found.update(s for s in source() if len(s) >= _MIN_SECRET)
        return tuple(sorted(found, key=len, reverse=True))

    def text(self, value: str) -> str:
        return _signatures(_replace(value, self.current()))

    def error(self, exc: errors.GatewayError) -> errors.GatewayError:
        """Scrub ``exc`` in place (message, param, code, and ``str(exc)``) and return it."""
        secrets = self.current()
        exc.message = _signatures(_replace(exc.message, secrets))
        exc.args = (exc.message,)  # str(exc), as logs and tracebacks show it
        if exc.param is not None:
            exc.param = _signatures(_replace(exc.param, secrets))
        if exc.code is not None:
            exc.code = _signatures(_replace(exc.code, secrets))
        return exc


VIRTUAL_KEY = re.compile(r"sk-sb-[A-Za-z0-9_-]*")
"""A virtual key's shape: ``app.keys.model.KEY_PREFIX`` and its random part (URL-safe
base64)."""
VIRTUAL_REDACTED = "sk-sb-" + REDACTED
"""What a virtual key is stored as: still saying that a virtual key was there."""
_KEY_HEAD = 8
"""A master key's first characters: where a string holds the key's start from these on (the
key cut short: a 404 quotes 200 characters of the model), that part goes too."""


class OwnKeys:
    """Scrubs the gateway's own keys from a string a client chose that a call record stores
    (a key sent as ``model``, quoted by the 404; as ``x-request-id``; as ``user``): anything
    shaped as a virtual key, known to the gateway or not (a revoked or mistyped one is still
    someone's key), becomes ``sk-sb-[redacted]``, and the ``master`` key ``[redacted]``
    (also its start, from its first 8 characters on: the key cut short).
    Cheap when there is none: a substring test or two."""

    __slots__ = ("_master",)

    def __init__(self, master: Iterable[str] = ()) -> None:
        self._master = tuple(sorted({m for m in master if len(m) >= _MIN_SECRET}, key=len,
                                    reverse=True))

    def __call__(self, value: str) -> str:
        for key in self._master:  # first: a master key shaped as a virtual key goes whole
            if key in value:
                value = value.replace(key, REDACTED)
            head = key[:_KEY_HEAD]
            if head in value:  # cut short (a 404 quotes 200 characters of the model)
                value = _cut_keys(value, key, head)
        if "sk-sb-" in value:
            value = VIRTUAL_KEY.sub(VIRTUAL_REDACTED, value)
        return value


def _cut_keys(value: str, key: str, head: str) -> str:
    """``value`` with each place that starts as ``key`` does, from its ``head`` on, replaced
    as far as it goes on as ``key`` does (the key cut short, then other text)."""
    at = value.find(head)
    while at != -1:
        size = len(head)
        while size < len(key) and at + size < len(value) and value[at + size] == key[size]:
            size += 1
        value = value[:at] + REDACTED + value[at + size:]
        at = value.find(head, at + len(REDACTED))
    return value


def _replace(value: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret in value:
            value = value.replace(secret, REDACTED)
    return value


def one_line(text: str) -> str:
    """``text`` with anything unprintable escaped (``\\n``, ``\\x1b``, U+2028): text that came
    from outside (an upstream's model name, a key's name stored before names were checked) cannot
    end the line it is printed on and forge another, or colour a terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
