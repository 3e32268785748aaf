"""The prompt estimate counts a chat's file parts (a PDF document, a text file), from their
size alone (``app.usage._file_tokens``)."""

from __future__ import annotations

import base64
from typing import Any

from app.schemas import ChatRequest
from app.usage import estimate_prompt_tokens, estimate_tokens

HI = [{"role": "user", "content": "hi"}]


def _chat(parts: list[dict[str, Any]]) -> ChatRequest:
    return ChatRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "hi"}, *parts]}]})


def _pdf(size: int) -> dict[str, Any]:
    data = base64.b64encode(b"%" * size).decode()
    return {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{data}",
                                     "filename": "a.pdf"}}


def test_a_pdf_counts_1500_tokens_a_page_of_100_kb() -> None:
    """A PDF counts 1,500 tokens for each 100 KB of its decoded size, rounded up, from one
    page to at most 100 (Anthropic's limit); a file by id counts one page."""
    bare = estimate_prompt_tokens(_chat([]))
    for size, pages in ((10, 1), (100_000, 1), (100_001, 2), (300_000, 3),
                        (30_000_000, 100)):
        assert estimate_prompt_tokens(_chat([_pdf(size)])) == bare + 1500 * pages, size
    by_id = {"type": "file", "file": {"file_id": "file-abc"}}
    assert estimate_prompt_tokens(_chat([by_id, _pdf(10)])) == bare + 3000


def test_a_text_file_counts_as_its_text_size() -> None:
    """A ``text/*`` data URL counts a token per 4 bytes of its decoded size, base64 or not."""
    bare = estimate_prompt_tokens(_chat([]))
    text = "word " * 400
    encoded = base64.b64encode(text.encode()).decode()
    for url in (f"data:text/plain;base64,{encoded}", f"data:text/plain,{text}"):
        part = {"type": "file", "file": {"file_data": url, "filename": "a.txt"}}
        assert estimate_prompt_tokens(_chat([part])) == bare + 500, url
    assert estimate_tokens("hi") < 500
