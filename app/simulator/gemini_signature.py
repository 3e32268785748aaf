"""Gemini 3's thought signatures, as the simulator issues and checks them.

Google's signatures are opaque encrypted model state; the simulator's are an HMAC, so it can tell
its own from a forged or altered one without keeping any state between requests. Models named
``gemini-3*`` sign, as Gemini 3 does (https://ai.google.dev/gemini-api/docs/thought-signatures):
the first ``functionCall`` part of an answer (a signature bound to that call's name and
arguments), else the answer's last part. Their requests are checked as Google checks them:

- The current turn starts at the newest ``user`` content holding something other than
  ``functionResponse`` parts; in every ``model`` content after it, the first ``functionCall``
  part must carry its ``thoughtSignature``, else the 400 INVALID_ARGUMENT Google sends ("Function
  call is missing a thought_signature in functionCall parts...", naming the function and the
  content's position, counted from 1).
- A ``thoughtSignature`` anywhere in a model content that is not one the simulator issued for that
  part (for a call: its name and arguments) is Google's 400 "Corrupted thought signature.".
  Signatures on text are not required back (Google does not enforce them either).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import orjson

from app.simulator.gemini_request import invalid

_KEY = b"switchboard-simulator-thought-signatures"
_TEXT = "text"
"""What a signature on a part other than a function call is bound to."""


def signs(model: str) -> bool:
    """Whether ``model`` issues (and requires) thought signatures: Gemini 3."""
    return model.startswith("gemini-3")


def _label(part: dict[str, Any]) -> str:
    call = part.get("functionCall")
    if not isinstance(call, dict):
        return _TEXT
    args = orjson.dumps(call.get("args") or {}, option=orjson.OPT_SORT_KEYS).decode()
    return f"call\n{call.get('name')}\n{args}"


def sign(part: dict[str, Any]) -> str:
    """The signature the simulator gives ``part`` (a function call's binds its name and
    arguments), base64 as Google sends ``bytes`` fields in JSON."""
    digest = hmac.new(_KEY, _label(part).encode(), hashlib.sha256).digest()
    return base64.b64encode(b"sim-thought:" + digest).decode()


def check(contents: list[dict[str, Any]]) -> None:
    """Refuse a history whose signatures Gemini 3 would refuse (see the module docstring)."""
    start = 0
    for i in range(len(contents) - 1, -1, -1):
        turn = contents[i]
        if turn.get("role", "user") == "user" and \
                any("functionResponse" not in part for part in turn["parts"]):
            start = i
            break
    for i, turn in enumerate(contents):
        if turn.get("role") != "model":
            continue
        for part in turn["parts"]:
            given = part.get("thoughtSignature")
            if given is not None and not hmac.compare_digest(str(given), sign(part)):
                raise invalid("Corrupted thought signature.")
        calls = [part for part in turn["parts"] if "functionCall" in part]
        if i > start and calls and "thoughtSignature" not in calls[0]:
            name = calls[0]["functionCall"].get("name")
            raise invalid(
                "Function call is missing a thought_signature in functionCall parts. This is "
                "required for tools to work correctly, and missing thought_signature may lead "
                f"to degraded model performance. Additional data, function call `default_api:"
                f"{name}` , position {i + 1}. Please refer to "
                "https://ai.google.dev/gemini-api/docs/thought-signatures for more details.")
