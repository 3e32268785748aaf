"""Replicate's HTTP calls on top of the shared ``Upstream``: any method, extra headers per call,
a deadline instead of the provider's fixed timeout, and the GET event stream of a prediction.

The shared ``Upstream`` posts JSON and streams a POST; Replicate also needs GETs (the
prediction, its stream URL) and a ``Prefer: wait`` header on creation only. The stream's ``data``
lines lose exactly one leading space, as the SSE spec (and Replicate's SDK decoder) say: an
``output`` event's data is a raw token whose own leading space (``" world"``) must survive, which
the shared parser, written for JSON data, does not keep.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncGenerator, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from app import errors
from app.providers.http import LineBuffer, SSEEvent, Upstream

Json = dict[str, Any]


class SSEReader:
    """Server-sent events from lines, keeping a data field's text after the single space."""

    __slots__ = ("data", "event")

    def __init__(self) -> None:
        self.event: str | None = None
        self.data: list[str] | None = None

    def line(self, raw: bytes) -> SSEEvent | None:
        """Take one line; the event it completes, if any."""
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            return self.end()
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self.data = [*self.data, value] if self.data is not None else [value]
        elif name == "event":
            self.event = value
        return None

    def end(self) -> SSEEvent | None:
        """The event in progress (one with at least one data line)."""
        found = SSEEvent(self.event, "\n".join(self.data)) if self.data is not None else None
        self.event, self.data = None, None
        return found


def _host_trusted(url: str, base_url: str) -> bool:
    """Whether ``url`` may receive the API token: the base URL's host, or (for a named host) a
    host under its parent domain (``api.replicate.com`` -> ``*.replicate.com``, where Replicate
    serves prediction streams)."""
    host, base = urlsplit(url).hostname or "", urlsplit(base_url).hostname or ""
    if host == base:
        return True
    try:
        ipaddress.ip_address(base)
    except ValueError:
        parent = base.partition(".")[2]
        return "." in parent and host.endswith("." + parent)
    return False


class ReplicateUpstream(Upstream):
    """``Upstream`` plus the calls Replicate's prediction lifecycle needs."""

    def _url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            if not _host_trusted(path_or_url, self.base_url):
                raise errors.BadUpstreamResponse(
                    f"Replicate pointed at {urlsplit(path_or_url).hostname!r}, outside "
                    f"{self.shown}'s domain; the API token is not sent there")
            return path_or_url
        return self.base_url + path_or_url

    def _deadline_timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=max(seconds, 0.001),
                                     sock_connect=self._connect_timeout_s)

    async def call(self, method: str, path_or_url: str, payload: Json | None = None, *,
                   timeout_s: float | None, deadline: bool = False,
                   headers: Mapping[str, str] | None = None) -> Json:
        """One JSON request; the parsed object of a 2xx answer, else a gateway error.
        ``timeout_s``: a target's own timeout (``None``: the provider's), or with ``deadline``
        the time left before the call's deadline."""
        sent = {**self._headers, **headers} if headers else self._headers
        timeout = self._deadline_timeout(timeout_s) if deadline and timeout_s is not None \
            else self._timeouts_for(timeout_s)[0]
        body = await self.request(method, self._url(path_or_url), payload, limits=timeout,
                                  headers=sent)
        if not isinstance(body, dict):
            raise errors.BadUpstreamResponse("Replicate sent JSON that is not an object")
        return body

    async def events(self, url: str, *, timeout_s: float | None
                     ) -> AsyncGenerator[SSEEvent, None]:
        """GET a prediction's stream URL and yield its events (``timeout_s``: the longest wait
        between reads). Errors before the first event raise from the first ``__anext__``;
        closing the generator closes the connection."""
        target = self._url(url)
        headers = {**self._headers, "Accept": "text/event-stream", "Cache-Control": "no-store"}
        try:
            async with self._session.get(target, headers=headers,
                                         timeout=self._timeouts_for(timeout_s)[1],
                                         allow_redirects=False) as response:
                if response.status >= 300:
                    if response.status < 400:
                        raise self._redirected(response)
                    await self._raise_for(response)
                reader = SSEReader()
                lines = LineBuffer("Replicate")
                while chunk := await response.content.readany():
                    for raw_line in lines.feed(chunk):
                        found = reader.line(raw_line)
                        if found is not None:
                            yield found
                rest = lines.rest()
                found = reader.line(rest) if rest else None
                if found is not None:
                    yield found
                found = reader.end()
                if found is not None:
                    yield found
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._scrub(self._translate(exc)) from None
