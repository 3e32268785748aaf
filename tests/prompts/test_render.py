"""Rendering is plain substitution: placeholders, escapes, typed variables, and nothing that a
template or a value could make the gateway evaluate; a render's size is bounded before it is
built."""

from __future__ import annotations

import tracemalloc
from datetime import date
from typing import Any

import orjson
import pytest

from app import errors
from app.prompts.model import (
    CompiledVersion,
    VersionRecord,
    VersionSpec,
    content_digest,
    params_limit_problem,
    parse,
)
from app.prompts.render import (
    Declared,
    PromptVariablesError,
    Slot,
    TemplateSyntaxError,
    added,
    bind,
    compile_text,
    placeholders,
    render_text,
    rendered_size,
)
from app.stages.template import render as render_messages


def render(text: str, **values: str) -> str:
    return render_text(compile_text(text), values)


def test_placeholders_with_and_without_spaces() -> None:
    """``{{name}}``, ``{{ name }}`` and tabs inside the braces are the same placeholder."""
    assert render("Hi {{name}}, {{ name }}, {{\tname\t}}!", name="Ada") == "Hi Ada, Ada, Ada!"
    assert compile_text("a{{ x }}b") == ("a", Slot("x"), "b")
    assert placeholders(compile_text("{{ b }}{{ a }}{{ b }}")) == ["b", "a"]


@pytest.mark.parametrize("text", [
    "{{ a.b }}", "{{ x | upper }}", "{{ f() }}", "{{ }}", "{{ 1x }}", "{{{ x }}}",
    "{{ x", "{{ x }", "{{ x['k'] }}", "{{ x + 1 }}", "{{ ''.__class__ }}",
])
def test_anything_but_a_name_is_a_syntax_error(text: str) -> None:
    """Expressions, filters, attribute and item access, calls and unclosed braces are refused,
    saying where."""
    with pytest.raises(TemplateSyntaxError, match="line 1, column"):
        compile_text(text)


def test_syntax_error_position_is_line_and_column() -> None:
    """The error names the 1-based line and column of the bad ``{{``."""
    with pytest.raises(TemplateSyntaxError, match="line 2, column 4"):
        compile_text("ok {{ a }}\nab {{ a.b }}")


def test_blocks_and_lone_braces_are_plain_text() -> None:
    """``{% ... %}``, ``{# ... #}``, single braces and a lone ``}}`` mean nothing."""
    text = "{% for x in y %}{# c #} {x} }} {\"json\": 1}"
    assert render(text) == text


@pytest.mark.parametrize(("text", "expected"), [
    ("\\{{ x }}", "{{ x }}"),                 # escaped: literal
    ("\\\\{{ x }}", "\\V"),                  # a literal backslash, then the value
    ("\\\\\\{{ x }}", "\\{{ x }}"),           # three: one backslash and a literal {{
    ("a\\b {{ x }}", "a\\b V"),               # a backslash elsewhere is literal
    ("\\{{ a.b | f }}", "{{ a.b | f }}"),     # an escaped opener is never checked
])
def test_escapes(text: str, expected: str) -> None:
    """A backslash escapes ``{{``; backslashes before ``{{`` pair up."""
    assert render(text, x="V") == expected


@pytest.mark.parametrize("payload", [
    "{{ other }}", "{{ 7*7 }}", "{% import os %}{{ os.system('id') }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}", "\\{{ other }}", "${jndi:x}",
])
def test_values_are_never_rescanned(payload: str) -> None:
    """A value holding template syntax (Jinja payloads included) is inserted verbatim."""
    compiled = compile_text("[{{ text }}] {{ other }}")
    assert render_text(compiled, {"text": payload, "other": "O"}) == f"[{payload}] O"


DECLARED = {"text": Declared("string"), "n": Declared("integer", True, 3),
            "ratio": Declared("number", True, 0.5), "loud": Declared("boolean", True, False),
            "data": Declared("json", True, None)}


def test_bind_uses_defaults_and_json_text() -> None:
    """Strings go in as they are; other types as compact JSON; defaults fill the gaps."""
    texts = bind(DECLARED, {"text": "hi", "data": {"a": [1, "b"]}, "loud": True})
    assert texts == {"text": "hi", "n": "3", "ratio": "0.5", "loud": "true",
                     "data": '{"a":[1,"b"]}'}


@pytest.mark.parametrize(("given", "problems"), [
    ({}, {"text": "is required (string) and was not given"}),
    ({"text": "x", "extra": 1}, {"extra": "is not a variable of this template version"}),
    ({"text": 5}, {"text": "must be a string, got integer"}),
    ({"text": "x", "n": True}, {"n": "must be an integer, got boolean"}),
    ({"text": "x", "n": 1.5}, {"n": "must be an integer, got number"}),
    ({"text": "x", "ratio": "0.5"}, {"ratio": "must be a number, got string"}),
    ({"text": "x", "ratio": float("nan")},
     {"ratio": "must be a finite number, got NaN or infinity"}),
    ({"text": "x", "loud": 1}, {"loud": "must be a boolean, got integer"}),
])
def test_bind_names_each_bad_variable(given: dict[str, Any], problems: dict[str, str]) -> None:
    """Missing, unknown and mistyped variables are each named, with the type, never the value."""
    with pytest.raises(PromptVariablesError) as caught:
        bind(DECLARED, given)
    assert caught.value.problems == problems


@pytest.mark.parametrize(("body", "problems", "texts"), [
    (b'{"data": 18446744073709551616}', {"data": "holds a number past the 64-bit integers"},
     None),
    (b'{"data": {"a": [1, -9223372036854775809]}}',
     {"data": "holds a number past the 64-bit integers"}, None),
    (b'{"n": 123456789012345678901234567890}',
     {"n": "must be an integer from -9223372036854775808 to 18446744073709551615"}, None),
    (b'{"data": [18446744073709551615, -9223372036854775808, 1e16, "1e+99"], '
     b'"n": 18446744073709551615}', None,
     {"data": '[18446744073709551615,-9223372036854775808,1e+16,"1e+99"]',
      "n": "18446744073709551615"}),
])
def test_integers_past_64_bits_are_refused_not_rounded(body: bytes, problems: dict[str, str] |
                                                       None, texts: dict[str, str] | None) -> None:
    """An integer literal past 64 bits, which the request parser reads as an approximate float,
    is refused in a ``json`` or ``integer`` variable, naming the range, never rendered rounded
    (``1.8446744073709552e+19``); the 64-bit integers themselves render exactly."""
    given = {"text": "x", **orjson.loads(body)}
    if problems is None:
        rendered = bind(DECLARED, given)
        assert {name: rendered[name] for name in texts or {}} == texts
        return
    with pytest.raises(PromptVariablesError) as caught:
        bind(DECLARED, given)
    assert list(caught.value.problems) == list(problems)
    for name, says in problems.items():
        assert caught.value.problems[name].startswith(says)


def test_bind_reports_every_problem_at_once() -> None:
    """All problems in one error, sorted by name."""
    with pytest.raises(PromptVariablesError) as caught:
        bind(DECLARED, {"n": "three", "zz": 1})
    assert list(caught.value.problems) == ["n", "text", "zz"]


def test_a_flood_of_unknown_variables_gives_a_short_message() -> None:
    """50,000 long unknown names: every one in ``problems``, but the message (the 400's body)
    names the first 20, each cut to 64 characters, and counts the rest."""
    given = {"text": "x", **{f"{i:05d}" + "v" * 200: 1 for i in range(50_000)}}
    with pytest.raises(PromptVariablesError) as caught:
        bind(DECLARED, given)
    assert len(caught.value.problems) == 50_000
    message = str(caught.value)
    assert len(message) < 4_000 and message.endswith("; and 49980 more")
    assert message.startswith("'00000" + "v" * 59 + "...' is not a variable")


def spec(content: str, **variables: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], "variables": variables}


def nested(levels: int) -> Any:
    """``1`` inside ``levels`` nested lists."""
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(("data", "param", "says"), [
    (spec("{{ a.b }}", a={"type": "json"}), "messages.0.content", "does not open"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "{{ x }}"}]},
     "messages.1.content", "'x', not declared"),
    (spec("{{ x }}", x={"type": "integer", "default": "3"}), "variables.x.default",
     "the default must be an integer, got string"),
    (spec("{{ x }}", x={"type": "number", "default": float("nan")}), "variables.x.default",
     "the default must be a finite number, got NaN or infinity"),
    (spec("{{ x }}", x={"type": "number", "default": float("-inf")}), "variables.x.default",
     "NaN or infinity"),
    (spec("{{ j }}", j={"type": "json", "default": nested(300)}), "variables.j.default",
     "the default nests deeper than 64 levels"),
    (spec("{{ j }}", j={"type": "json", "default": nested(65)}), "variables.j.default",
     "nests deeper than 64 levels"),
    (spec("{{ j }}", j={"type": "json", "default": {"a": [float("nan")]}}),
     "variables.j.default", "holds NaN or infinity"),
    (spec("{{ j }}", j={"type": "json", "default": {1: "one"}}), "variables.j.default",
     "a key that is not a string"),
    (spec("{{ j }}", j={"type": "json", "default": [date(2024, 1, 2)]}), "variables.j.default",
     "holds a date, which is not JSON"),
    (spec("{{ d }}", d={"type": "string", "default": date(2024, 1, 2)}), "variables.d.default",
     "the default holds a date, which is not JSON (in YAML, quote dates and times)"),
    (spec("{{ d }}", d={"type": "integer", "default": date(2024, 1, 2)}), "variables.d.default",
     "the default holds a date, which is not JSON"),
    (spec("{{ d }}", d={"type": "string", "default": [date(2024, 1, 2)]}),
     "variables.d.default", "the default must be a string, got array"),
    (spec("hi", **{"bad-name": {}}), "variables", "not a variable name"),
    ({**spec("hi"), "params": {"temperature": 9}}, "params", "temperature"),
    ({**spec("hi"), "params": {"stream": True}}, "params", "may not set stream"),
    ({**spec("hi"), "params": {"user": "alice"}}, "params", "may not set user"),
    ({**spec("hi"), "params": {"metadata": {"a": nested(300)}}}, "params",
     "params nests deeper than 64 levels"),
    ({**spec("hi"), "extra": 1}, "extra", "Extra inputs"),
    (spec("{{ j }}", j={"type": "json", "default": {"a": [2**64]}}), "variables.j.default",
     "the default holds an integer past 64 bits"),
    (spec("{{ i }}", i={"type": "integer", "default": -(2**63) - 1}), "variables.i.default",
     "the default holds an integer past 64 bits"),
    ({**spec("hi"), "params": {"metadata": {"a": 2**70}}}, "params",
     "params holds an integer past 64 bits"),
])
def test_versions_are_checked_when_created(data: dict[str, Any], param: str, says: str) -> None:
    """A version that could not render, or would send a bad request, or holds what is not
    JSON (too deep, NaN, a date), is refused at creation with a 400 naming the field."""
    with pytest.raises(errors.InvalidRequest) as caught:
        parse(VersionSpec, data)
    assert says in caught.value.message
    assert caught.value.param == param


def test_a_bad_version_is_told_in_the_admin_apis_words() -> None:
    """"Invalid value for 'params.n': ...", as every admin error names its field: not the
    internal class's name ("Invalid VersionSpec (params.n)")."""
    with pytest.raises(errors.InvalidRequest) as caught:
        parse(VersionSpec, {**spec("hi"), "params": {"temperature": 5}})
    assert caught.value.message.startswith("Invalid value for 'params': ")
    with pytest.raises(errors.InvalidRequest) as caught:
        parse(VersionSpec, spec("{{"), param="version")
    assert caught.value.message.startswith("Invalid value for 'version.messages.0.content': ")
    too_many = params_limit_problem({"n": 99}, max_n=16, max_tokens=1000)
    assert too_many is not None and too_many.message.startswith(
        "Invalid value for 'params.n': 'n' is 99; the gateway's limit is 16 (limits.max_n)")
    assert "VersionSpec" not in caught.value.message + too_many.message


@pytest.mark.parametrize(("change", "param"), [
    ({"messages": [{"role": "user", "content": "a\x00b"}]}, "version.messages.0.content"),
    ({"messages": [{"role": "user", "content": "hi", "name": "a\x00"}]},
     "version.messages.0.name"),
    ({"author": "me\x00"}, "version.author"),
    ({"note": "\x00"}, "version.note"),
    ({"model": "m\x00"}, "version.model"),
    ({"params": {"stop": ["\x00"]}}, "version.params"),
    ({"params": {"metadata": {"a\x00": "b"}}}, "version.params"),
    ({"variables": {"v": {"type": "string", "default": "\x00"}}},
     "version.variables.v.default"),
    ({"variables": {"v": {"description": "\x00"}}}, "version.variables.v.description"),
    ({"params": {"stop": ["\ud800"]}}, "version.params"),
    ({"params": {"metadata": {"\udfff": "b"}}}, "version.params"),
    ({"variables": {"v": {"type": "string", "default": "x\ud800"}}},
     "version.variables.v.default"),
    ({"variables": {"v": {"type": "json", "default": {"k": ["\ud800"]}}}},
     "version.variables.v.default"),
])
def test_a_nul_or_lone_surrogate_is_refused_naming_its_field(change: dict[str, Any],
                                                             param: str) -> None:
    """Postgres text holds no NUL, and no UTF-8 encodes a lone surrogate (which JSON's escapes
    can spell): a version with one is the admin's 400 naming the field (a NUL was the database
    driver's error naming none, and stored on SQLite; a surrogate in a default or params a
    500)."""
    with pytest.raises(errors.InvalidRequest) as caught:
        parse(VersionSpec, {**spec("hi"), **change}, param="version")
    assert caught.value.param == param
    assert "NUL" in caught.value.message or "lone surrogate" in caught.value.message


def test_a_json_default_may_nest_64_levels() -> None:
    """The depth bound is 64 levels of containers (the request parser's default), and such a
    version can be hashed and rendered."""
    version = parse(VersionSpec, spec("{{ j }}", j={"type": "json", "default": nested(64)}))
    assert len(content_digest(version.content())) == 64
    assert bind({"j": version.variables["j"].declared()}, {})["j"] == \
        "[" * 64 + "1" + "]" * 64


def test_a_valid_version_spec() -> None:
    """Declared variables with and without defaults, params that are chat-request fields."""
    version = parse(VersionSpec, {**spec("{{ a }} {{ b }}", a={}, b={"type": "integer",
                                                                      "default": 2}),
                                  "model": "chat", "params": {"temperature": 0.2}})
    assert version.variables["a"].has_default is False
    assert version.variables["b"].has_default is True
    assert version.content()["variables"] == {"a": {"type": "string"},
                                              "b": {"type": "integer", "default": 2}}


def compiled(*contents: str, **variables: Any) -> CompiledVersion:
    """Version 1 of template ``t`` with one user message per content, compiled."""
    version = parse(VersionSpec, {"messages": [{"role": "user", "content": c} for c in contents],
                                  "variables": variables})
    return CompiledVersion.of(VersionRecord("t", 1, version, 0.0))


@pytest.mark.parametrize(("contents", "values"), [
    (("plain",), {}),
    (("{{ a }}-{{ b }}", "é {{ a }}{{ a }} \\{{ x }}"), {"a": "ünï", "b": 7}),
    (("{{ a }}",), {"a": "😀" * 5}),
])
def test_the_size_is_known_before_rendering(contents: tuple[str, ...],
                                            values: dict[str, Any]) -> None:
    """``rendered_size`` is exactly the UTF-8 size of the rendered messages."""
    version = compiled(*contents, **{n: {"type": "json"} for n in values})
    texts = bind(version.declared, values)
    size = rendered_size(version.literal_bytes, version.uses, texts)
    rendered = render_messages(version, values, max_bytes=10_000)
    assert size == sum(len(m["content"].encode()) for m in rendered)
    assert size == version.literal_bytes + sum(added(version.uses, texts).values())
    with pytest.raises(errors.BodyTooLarge):
        render_messages(version, values, max_bytes=size - 1)


def test_a_render_past_the_bound_is_refused_before_it_is_built() -> None:
    """A 10 KB value in 20,000 placeholders (200 MB of messages) is a 413 naming the variable,
    and nothing near that size is ever allocated."""
    version = compiled("{{a}}" * 20_000, "{{ b }}", a={}, b={"type": "string", "default": "x"})
    value = "v" * 10_000
    tracemalloc.start()
    try:
        with pytest.raises(errors.BodyTooLarge) as caught:
            render_messages(version, {"a": value}, max_bytes=8 * 1024 * 1024)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000
    error = caught.value
    assert (error.status_code, error.param, error.code) == (413, "prompt.variables.a",
                                                            "prompt_too_large")
    assert error.message == (
        "Prompt template 't' version 1 would render 200000001 bytes of messages, more than the "
        "limit of 8388608 bytes (limits.max_body_bytes); variable 'a' adds 200000000 of them "
        "(20000 placeholder(s)).")


def test_a_template_alone_past_the_bound_names_the_template() -> None:
    """When the template's own text is past the limit, the 413 names ``prompt.id`` (no value
    the client could shorten would help), whatever its variables add; when only the values
    take it past, the variable that adds the most."""
    version = compiled("x" * 2000, "{{ a }}", a={})
    for value in ("", "hello"):
        with pytest.raises(errors.BodyTooLarge) as caught:
            render_messages(version, {"a": value}, max_bytes=1024)
        assert caught.value.param == "prompt.id"
        assert caught.value.message == (
            "Prompt template 't' version 1 has 2000 bytes of message text of its own, without "
            "its variables, more than the limit of 1024 bytes (limits.max_body_bytes).")
    assert render_messages(version, {"a": ""}, max_bytes=2000)[0]["content"] == "x" * 2000
    with pytest.raises(errors.BodyTooLarge) as caught:
        render_messages(version, {"a": "hello"}, max_bytes=2000)
    assert caught.value.param == "prompt.variables.a"
