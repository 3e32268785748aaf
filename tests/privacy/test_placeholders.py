"""Placeholders: issued stably, restored whole and in streamed pieces."""

from __future__ import annotations

import orjson

from app.privacy.detect import Detector
from app.privacy.placeholders import StreamRestorer, Vault, reserved_in
from app.privacy.stream import release, restore_chunk
from app.providers.base import NATIVE_EVENTS

DETECTOR = Detector()


def redact(vault: Vault, text: str) -> str:
    return vault.redact(text, DETECTOR.scan(text))


def test_same_value_same_placeholder_across_messages() -> None:
    """A value keeps its placeholder in every message; numbers count per type."""
    vault = Vault()
    first = redact(vault, "mail ann@x.org or bob@y.org")
    second = redact(vault, "again: bob@y.org, call (415) 555-2671")
    assert first == "mail <EMAIL_1> or <EMAIL_2>"
    assert second == "again: <EMAIL_2>, call <PHONE_1>"
    assert vault.restore(first + second) == ("mail ann@x.org or bob@y.org"
                                             "again: bob@y.org, call (415) 555-2671")


def test_client_placeholders_are_never_issued_or_restored() -> None:
    """A placeholder the client wrote itself is skipped, and left as it is."""
    text = "template <EMAIL_1> for ann@x.org"
    vault = Vault(reserved_in([text]))
    redacted = redact(vault, text)
    assert redacted == "template <EMAIL_1> for <EMAIL_2>"
    assert vault.restore("<EMAIL_1> <EMAIL_2> <EMAIL_3>") == "<EMAIL_1> ann@x.org <EMAIL_3>"


def test_stream_split_placeholders_restored() -> None:
    """A placeholder split across pieces comes out whole, at the piece that completes it."""
    vault = Vault()
    redact(vault, "ann@x.org and (415) 555-2671")
    restorer = StreamRestorer(vault)
    pieces = ["Hi <", "EMA", "IL_", "1", "> é", "日本<PH", "ONE_1>!", " 3 < 4"]
    out = [restorer.feed(0, p) for p in pieces]
    assert out == ["Hi ", "", "", "", "ann@x.org é", "日本", "(415) 555-2671!", " 3 < 4"]
    assert restorer.held() == 0


def test_stream_holds_only_a_possible_placeholder_start() -> None:
    """Text that cannot start a placeholder goes out at once; a held tail is flushed at the
    end."""
    vault = Vault()
    redact(vault, "ann@x.org")
    restorer = StreamRestorer(vault)
    assert restorer.feed(0, "a <b> c <EMAIL_") == "a <b> c "
    assert restorer.flush(0) == "<EMAIL_"
    assert restorer.feed(0, "x <P") == "x <P"  # no PHONE placeholder was issued


def test_restore_chunk_choice_flushes_at_finish() -> None:
    """An OpenAI chunk's content and tool arguments are restored; the tail goes out with the
    finish_reason chunk."""
    vault = Vault()
    redact(vault, "ann@x.org")
    restorer = StreamRestorer(vault)

    def chunk(content: str | None, finish: str | None = None) -> dict[str, object]:
        return {"choices": [{"index": 0, "delta": {"content": content},
                             "finish_reason": finish}]}

    a = restore_chunk(restorer, chunk("to <EMAIL"))
    b = restore_chunk(restorer, chunk("_1> now <EM"))
    c = restore_chunk(restorer, chunk(None, "stop"))
    texts = [x["choices"][0]["delta"]["content"] for x in (a, b, c)]
    assert texts == ["to ", "ann@x.org now ", "<EM"]


def test_restore_chunk_native_events() -> None:
    """A native Messages stream's text deltas are restored, a held tail sent before the
    block stops."""
    vault = Vault()
    redact(vault, "ann@x.org")
    restorer = StreamRestorer(vault)

    def delta(text: str) -> tuple[str, str]:
        return ("content_block_delta", orjson.dumps(
            {"type": "content_block_delta", "index": 0,
             "delta": {"type": "text_delta", "text": text}}).decode())

    stop = ("content_block_stop", '{"type":"content_block_stop","index":0}')
    one = restore_chunk(restorer, {"choices": [], NATIVE_EVENTS: [delta("hi <EMAIL_1> <E")]})
    two = restore_chunk(restorer, {"choices": [], NATIVE_EVENTS: [stop]})
    events = [*one[NATIVE_EVENTS], *two[NATIVE_EVENTS]]
    texts = [orjson.loads(d)["delta"]["text"] for n, d in events if n == "content_block_delta"]
    assert texts == ["hi ann@x.org ", "<E"]
    assert events[-1] == stop


def test_release_sends_every_held_tail_in_one_chunk() -> None:
    """At a stream's end without finish_reasons, every part's held tail goes out in one chunk,
    each where its part belongs (content, completion text, tool arguments, native deltas)."""
    vault = Vault()
    redact(vault, "ann@x.org")
    restorer = StreamRestorer(vault)
    restore_chunk(restorer, {"choices": [
        {"index": 0, "delta": {"content": "a <EMAIL", "tool_calls": [
            {"index": 1, "function": {"arguments": '{"to": "<EM'}}]}, "finish_reason": None},
        {"index": 1, "text": "b <EMAIL_1", "finish_reason": None}]})
    restore_chunk(restorer, {"choices": [], NATIVE_EVENTS: [("content_block_delta", orjson.dumps(
        {"type": "content_block_delta", "index": 2,
         "delta": {"type": "text_delta", "text": "c <"}}).decode())]})
    base = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    out = release(restorer, base)
    assert out is not None and {k: out[k] for k in base} == base
    assert out["choices"] == [
        {"index": 0, "finish_reason": None, "delta": {
            "content": "<EMAIL", "tool_calls": [{"index": 1, "function": {"arguments": "<EM"}}]}},
        {"index": 1, "finish_reason": None, "text": "<EMAIL_1"}]
    assert [orjson.loads(d) for _, d in out[NATIVE_EVENTS]] == [
        {"type": "content_block_delta", "index": 2,
         "delta": {"type": "text_delta", "text": "<"}}]
    assert restorer.held() == 0 and release(restorer, base) is None


def test_could_start_is_a_proper_prefix_of_an_issued_placeholder() -> None:
    """``could_start`` (asked at each ``<`` of a stream) answers, per entity type rather than
    per placeholder, exactly what a look through every issued placeholder answers; with a
    number the client's own text reserved, it may hold that number's tail too (emitted as it
    is once the next piece rules it out)."""
    vault = Vault()
    for n in range(25):
        vault.placeholder("EMAIL", f"user{n}@example.com")
    for n in range(3):
        vault.placeholder("US_SSN", f"12345678{n}")
    names = list(vault.originals)
    tails = {name[:i] for name in names for i in range(1, len(name) + 1)} | {
        "<EMAIL_0", "<EMAIL_26", "<EMAIL_3", "<EMAIL_30", "<US_SSN_4", "<US_", "<PHONE", "<E1",
        "<EMAIL_\u0661", "<EMAIL_1x", "<"}
    for tail in sorted(tails):
        brute = any(name.startswith(tail) and name != tail for name in names)
        assert vault.could_start(tail) is brute, tail
    reserved = Vault(["<EMAIL_1>"])
    reserved.placeholder("EMAIL", "a@example.com")  # issued as <EMAIL_2>
    assert reserved.could_start("<EMAIL_2") and reserved.could_start("<EMAIL_1")
    assert not reserved.could_start("<EMAIL_3")


def test_native_thinking_deltas_pass_unrestored() -> None:
    """A native stream's thinking_delta keeps its placeholders (Anthropic signs that text);
    its text_delta is restored."""
    vault = Vault()
    redact(vault, "ann@x.org")
    restorer = StreamRestorer(vault)
    events = [("content_block_delta", orjson.dumps(
        {"type": "content_block_delta", "index": i, "delta": {"type": kind, field: "<EMAIL_1>."}}
    ).decode()) for i, (kind, field) in enumerate((("thinking_delta", "thinking"),
                                                   ("text_delta", "text")))]
    out = restore_chunk(restorer, {"choices": [], NATIVE_EVENTS: events})
    deltas = [orjson.loads(d)["delta"] for _, d in out[NATIVE_EVENTS]]
    assert deltas == [{"type": "thinking_delta", "thinking": "<EMAIL_1>."},
                      {"type": "text_delta", "text": "ann@x.org."}]
