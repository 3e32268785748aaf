"""vLLM's two structured-output dialects: version detection and translation, as pure functions."""

from __future__ import annotations

import pytest

from app import errors
from app.providers.base import Json
from app.providers.vllm import dialect_for_version, server_root, to_guided, to_structured_outputs


@pytest.mark.parametrize(
    ("version", "dialect"),
    [
        ("0.12.0", "structured_outputs"),
        ("0.13.1rc2+cu128", "structured_outputs"),
        ("1.0.0", "structured_outputs"),
        ("0.11.2", "guided"),
        ("0.10.1.1", "guided"),
        ("0.6.3.post1", "guided"),
        ("v0.9.0", "guided"),
        ("unknown", None),
        ("", None),
    ],
)
def test_dialect_follows_the_version(version: str, dialect: str | None) -> None:
    """vLLM 0.12 and later read structured_outputs; earlier versions read guided_*."""
    assert dialect_for_version(version) == dialect


def test_guided_fields_move_into_structured_outputs() -> None:
    """Every guided_* field becomes its structured_outputs key; other fields stay."""
    payload = {
        "model": "m",
        "guided_json": {"type": "object"},
        "guided_regex": "a+",
        "guided_choice": ["x", "y"],
        "guided_grammar": "root ::= 'a'",
        "guided_whitespace_pattern": " ",
        "structural_tag": "{}",
        "top_k": 5,
    }
    to_structured_outputs(payload)
    assert payload == {
        "model": "m",
        "top_k": 5,
        "structured_outputs": {
            "json": {"type": "object"},
            "regex": "a+",
            "choice": ["x", "y"],
            "grammar": "root ::= 'a'",
            "whitespace_pattern": " ",
            "structural_tag": "{}",
        },
    }


def test_structured_outputs_win_over_their_guided_twins() -> None:
    """A key the client already put in structured_outputs is not overwritten by guided_*."""
    payload = {"guided_regex": "old",
               "structured_outputs": {"regex": "new", "disable_fallback": True}}
    to_structured_outputs(payload)
    assert payload == {"structured_outputs": {"regex": "new", "disable_fallback": True}}


def test_nothing_guided_means_no_change() -> None:
    """A payload without guided_* fields is left exactly as it was."""
    payload = {"model": "m", "response_format": {"type": "json_object"}, "guided_json": None}
    before = dict(payload)
    to_structured_outputs(payload)
    assert payload == before


def test_structured_outputs_move_into_guided_fields() -> None:
    """Each structured_outputs key becomes its guided_* field and the object is removed."""
    payload = {"model": "m", "structured_outputs": {"json": {"type": "object"}, "choice": ["a"],
                                                    "regex": "r", "grammar": "g",
                                                    "whitespace_pattern": " ",
                                                    "structural_tag": "{}"}}
    to_guided(payload)
    assert payload == {"model": "m", "guided_json": {"type": "object"}, "guided_choice": ["a"],
                       "guided_regex": "r", "guided_grammar": "g",
                       "guided_whitespace_pattern": " ", "structural_tag": "{}"}


def test_guided_fields_win_over_their_structured_twins() -> None:
    """A guided_* field the client set is not overwritten by structured_outputs."""
    payload = {"guided_regex": "mine", "structured_outputs": {"regex": "theirs"}}
    to_guided(payload)
    assert payload == {"guided_regex": "mine"}


def test_json_object_becomes_response_format() -> None:
    """structured_outputs.json_object maps to response_format json_object for old servers."""
    payload: Json = {"structured_outputs": {"json_object": True}}
    to_guided(payload)
    assert payload == {"response_format": {"type": "json_object"}}
    kept: Json = {"structured_outputs": {"json_object": True},
            "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}
    to_guided(kept)
    assert kept == {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}


def test_untranslatable_structured_option_is_refused() -> None:
    """A structured_outputs key with no guided_* equivalent is a 400 naming it, not a drop."""
    payload = {"structured_outputs": {"json": {}, "disable_any_whitespace": True}}
    with pytest.raises(errors.InvalidRequest) as caught:
        to_guided(payload)
    assert caught.value.param == "structured_outputs.disable_any_whitespace"
    assert caught.value.status_code == 400
    assert "structured_outputs" in payload


def test_malformed_structured_outputs_is_left_for_the_server() -> None:
    """A structured_outputs that is not an object is not touched in either direction."""
    payload = {"structured_outputs": "json", "guided_regex": "a"}
    to_guided(payload)
    to_structured_outputs(payload)
    assert payload == {"structured_outputs": "json", "guided_regex": "a"}


@pytest.mark.parametrize(
    ("base_url", "root"),
    [
        ("http://vllm:8000/v1", "http://vllm:8000"),
        ("http://vllm:8000/v1/", "http://vllm:8000"),
        ("https://gpu.example/vllm/v1", "https://gpu.example/vllm"),
        ("http://vllm:8000", "http://vllm:8000"),
    ],
)
def test_version_probe_goes_to_the_server_root(base_url: str, root: str) -> None:
    """/version lives at the server root: the base URL without its /v1."""
    assert server_root(base_url) == root
