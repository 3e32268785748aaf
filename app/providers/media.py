"""Inline media as clients send it to the OpenAI API: a base64 ``data:`` URL, and the names of
its media type that providers refuse under another spelling."""

from __future__ import annotations

import re

DATA_URL = re.compile(r"^data:(?P<media>[\w.+-]+/[\w.+-]+)(?:;[^,;]*)*;base64,(?P<data>.*)$",
                      re.DOTALL)
"""A base64 data URL: its media type (``media``) and its payload (``data``)."""

_ALIASES = {"image/jpg": "image/jpeg", "image/jpe": "image/jpeg", "image/pjpeg": "image/jpeg"}
"""Names clients give JPEG (browsers' ``pjpeg``, the file extension's ``jpg``) that providers
refuse: Google with 400 "Unsupported MIME type: image/jpg", Anthropic with a 400 on
``media_type``; both take ``image/jpeg``."""


def media_type(named: str) -> str:
    """The registered, lower-case name of a data URL's media type."""
    media = named.lower()
    return _ALIASES.get(media, media)
