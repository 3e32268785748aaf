"""``app.prompts.diff``: two versions that differ never diff equal. Content is split at ``\\n``
only (a trailing newline, ``\\r\\n`` and the other line separators stay visible), and fields
are compared as JSON (``true``, ``1`` and ``1.0`` differ, as they do to the model)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.prompts.diff import diff, shown
from app.prompts.model import VersionRecord, VersionSpec, content_digest


def record(number: int, **spec: Any) -> VersionRecord:
    body = {"messages": [{"role": "user", "content": "x"}], **spec}
    return VersionRecord("t", number, VersionSpec.model_validate(body), 0.0)


def user(*contents: str, name: str | None = None) -> list[dict[str, Any]]:
    return [{"role": "user", "content": c, **({"name": name} if name else {})}
            for c in contents]


def test_the_testers_versions_differ_in_all_three_places() -> None:
    """The report's repro: line endings and a trailing newline, a json default ``true`` vs
    ``1``, and ``temperature`` ``1`` vs ``1.0``: each one shown."""
    old = record(1, messages=user("line one\nline two\n"),
                 variables={"j": {"type": "json", "default": True}}, params={"temperature": 1})
    new = record(2, messages=user("line one\r\nline two"),
                 variables={"j": {"type": "json", "default": 1}}, params={"temperature": 1.0})
    result = diff(old, new)
    lines = result["messages"].splitlines()
    assert "-line one" in lines and '+"line one\\r"' in lines
    assert "-" in lines  # the trailing newline's empty last line
    assert result["fields"]["params"] == {"from": {"temperature": 1},
                                          "to": {"temperature": 1.0}}
    j = result["fields"]["variables.j"]
    assert (j["from"]["default"], j["to"]["default"]) == (True, 1)
    assert type(j["from"]["default"]) is bool and type(j["to"]["default"]) is int
    assert json.dumps(result["fields"]["params"]["to"]) == '{"temperature": 1.0}'


@pytest.mark.parametrize(("a", "b"), [
    ("a\nb", "a\u2028b"), ("a\nb", "a\u2029b"), ("a\nb", "a\rb"), ("a\nb", "a\x0bb"),
    ("a\nb", "a\x0cb"), ("a\nb", "a\x1cb"), ("a\nb", "a\x85b"), ("a", "a\n"), ("a\n", "a\n\n"),
    ("a", '"a"'), ("--- user", "x"), ("a\x1b[31m", "a"), ("\t", "\\t"), ("", "\n"),
])
def test_contents_that_differ_never_diff_equal(a: str, b: str) -> None:
    result = diff(record(1, messages=user(a)), record(2, messages=user(b)))
    assert result["messages"], (a, b)
    assert "\u2028" not in result["messages"] and "\r" not in result["messages"]


@pytest.mark.parametrize(("old", "new"), [
    (user("a\n--- user\nb"), user("a", "b")),  # a header in the content, or two messages
    (user('"--- user"'), user("--- user")),
    (user("x", name="a) (b"), user("x", name="a")),
    (user("x", name="a\nb"), user("x", name="a\u2028b")),
])
def test_message_boundaries_and_names_are_unambiguous(old: list[dict[str, Any]],
                                                      new: list[dict[str, Any]]) -> None:
    assert diff(record(1, messages=old), record(2, messages=new))["messages"]


@pytest.mark.parametrize(("before", "after"), [
    ({"params": {"temperature": 1}}, {"params": {"temperature": 1.0}}),
    ({"params": {"top_k": 1}}, {"params": {"top_k": True}}),
    ({"params": {"logit_bias": {"1": 0}}}, {"params": {"logit_bias": {"1": 0.0}}}),
    ({"variables": {"n": {"type": "json", "default": 0}}},
     {"variables": {"n": {"type": "json", "default": False}}}),
    ({"variables": {"n": {"type": "json", "default": [1]}}},
     {"variables": {"n": {"type": "json", "default": [1.0]}}}),
])
def test_fields_are_compared_as_json(before: dict[str, Any], after: dict[str, Any]) -> None:
    old, new = record(1, **before), record(2, **after)
    assert content_digest(old.spec.content()) != content_digest(new.spec.content())
    assert diff(old, new)["fields"], (before, after)


def test_equal_versions_diff_empty_and_key_order_is_not_a_change() -> None:
    old = record(1, messages=user("a\r\nb\n"), params={"temperature": 1, "top_p": 0.5})
    new = record(2, messages=user("a\r\nb\n"), params={"top_p": 0.5, "temperature": 1})
    assert diff(old, new)["messages"] == "" and diff(old, new)["fields"] == {}


def test_plain_lines_are_shown_as_they_are() -> None:
    assert shown("You summarise {{ kind }}.\t(tab)") == "You summarise {{ kind }}.\t(tab)"
    assert shown("a\rb") == '"a\\rb"'
    assert shown("a\u2028b\x85") == '"a\\u2028b\\u0085"'
    assert shown("--- user") == '"--- user"' and shown('"q"') == '"\\"q\\""'
