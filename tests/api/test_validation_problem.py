"""``app.api.errors.validation_problem``: the admin API's 400 for a FastAPI validation problem
names the field in its message and gives a ``param`` that reads one way, whatever the keys the
client sent and whatever parts pydantic adds to the location."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from app.api.errors import field_path, validation_problem


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    text: str


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    count: int | str | None = None
    items: list[_Inner] = []
    tags: dict[str, int] = {}


def _problem(body: dict[str, Any]) -> tuple[str | None, str]:
    """The param and message of the 400 for ``body`` sent to a route taking ``_Body``."""
    try:
        _Body.model_validate(body)
    except ValidationError as exc:
        problems = [dict(p, loc=("body", *p["loc"])) for p in exc.errors()]
        error = validation_problem(problems, body=body)
        return error.param, error.message
    raise AssertionError(f"{body} validated")


@pytest.mark.parametrize(("body", "param", "message"), [
    ({"count": [1]}, "count", "Invalid value for 'count': Input should be a valid integer."),
    ({"items": [{}]}, "items.0.text", "Missing required parameter: 'items.0.text'."),
    ({"items": [{"text": "a", "x": 1}]}, "items.0.x", "Unknown parameter: 'items.0.x'."),
    ({"tags": {"a b": "1"}}, 'tags["a b"]',
     "Invalid value for 'tags[\"a b\"]': Input should be a valid integer."),
    ({"tags": {"str": "1"}}, "tags.str",
     "Invalid value for 'tags.str': Input should be a valid integer."),
    ({"tags": {"": "1"}}, 'tags[""]',
     "Invalid value for 'tags[\"\"]': Input should be a valid integer."),
], ids=["union-tags-left-out", "missing-nested", "unknown-nested", "spaced-key",
        "key-named-as-a-tag", "empty-key"])
def test_the_message_and_param_name_the_field(body: dict[str, Any], param: str,
                                              message: str) -> None:
    """A union's tags (``int``, ``str``) are no part of the path, a key named like one is; a
    key that is no plain name is JSON-quoted in brackets."""
    assert _problem(body) == (param, message)


def test_a_problem_of_no_field_keeps_the_plain_message() -> None:
    """A model's own check (located at the body itself) names no field: ``param`` null."""
    error = validation_problem([{"loc": ("body",), "msg": "Value error, give one of a and b",
                                 "type": "value_error"}], body={})
    assert (error.param, error.message) == (None, "Invalid request: give one of a and b.")


@pytest.mark.parametrize(("loc", "body", "path"), [
    (("query", "limit"), None, "limit"),
    (("path", "key_id"), None, "key_id"),
    (("body", "metadata", "", "[key]"), {"metadata": {"": "v"}}, "metadata"),
    (("body", "metadata", "[key]"), {"metadata": {"[key]": 5}}, 'metadata["[key]"]'),
    (("body", "m", "a.b", 0), {"m": {"a.b": ["x"]}}, 'm["a.b"].0'),
], ids=["query", "path", "bad-key", "key-spelled-key", "index-under-odd-key"])
def test_field_path(loc: tuple[int | str, ...], body: Any, path: str) -> None:
    """Query and path parameters are named as they are; a dict key's own problem is its
    dict's, a client key spelled like pydantic's ``[key]`` marker is a key."""
    assert field_path(loc, body)[0] == path
