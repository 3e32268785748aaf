"""The JSON object of each ``data`` field of one upstream stream, with a UTF-16 surrogate pair
cut across two events made whole again.

An upstream written in JavaScript cuts its text by UTF-16 code units: a character outside the
Basic Multilingual Plane (an emoji) can end one event as the JSON escape of its high surrogate
(``"\\ud83d"``) and start the next as that of its low one (``"\\ude00"``). Each event is valid
JSON, but its string is not Unicode, and orjson refuses it ("no low surrogate in string"), as
the gateway's own JSON writer would refuse the string. Only then, after orjson raised on an
event with such an escape, is the event read again by the standard library's parser (which
takes lone surrogates) and its strings mended: a high surrogate that ends a string is held back
and put before the low surrogate that starts the next string to have a lone one, in this event
or a later one (the character whole, in the later chunk); any other lone surrogate (not text at
all) becomes U+FFFD, and a held one that no low surrogate follows is dropped. An event orjson
reads costs nothing more.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from app import errors

Json = dict[str, Any]

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")
"""The JSON escape of a UTF-16 surrogate (``\\ud800`` to ``\\udfff``)."""
_LONE = re.compile("[\ud800-\udfff]")
"""A surrogate left alone in a str (the standard library joins a pair within one string)."""
_HIGH = ("\ud800", "\udbff")
_LOW = ("\udc00", "\udfff")


def _invalid() -> errors.BadUpstreamResponse:
    return errors.BadUpstreamResponse("upstream stream sent invalid JSON")


class EventJson:
    """Reads one stream's events in order (a fresh one per stream: it holds a high surrogate
    from one event for the next)."""

    __slots__ = ("_high",)

    def __init__(self) -> None:
        self._high = ""

    def __call__(self, data: str) -> Json:
        """The JSON object of one event's ``data``; ``BadUpstreamResponse`` when it is not
        JSON or not an object."""
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            value = self._mended(data)
        if not isinstance(value, dict):
            raise errors.BadUpstreamResponse("upstream stream sent JSON that is not an object")
        return value

    def _mended(self, data: str) -> Any:
        if _SURROGATE_ESCAPE.search(data) is None:
            raise _invalid() from None
        try:
            value = json.loads(data)
        except ValueError:
            raise _invalid() from None
        return self._mend(value)

    def _mend(self, value: Any) -> Any:
        if type(value) is str:
            return self._text(value) if _LONE.search(value) else value
        if type(value) is dict:
            return {_LONE.sub("\ufffd", key): self._mend(item) for key, item in value.items()}
        if type(value) is list:
            return [self._mend(item) for item in value]
        return value

    def _text(self, text: str) -> str:
        if self._high and _LOW[0] <= text[0] <= _LOW[1]:
            pair = self._high + text[0]
            text = pair.encode("utf-16-le", "surrogatepass").decode("utf-16-le") + text[1:]
        self._high = ""
        if _HIGH[0] <= text[-1] <= _HIGH[1]:
            self._high, text = text[-1], text[:-1]
        return _LONE.sub("\ufffd", text)
