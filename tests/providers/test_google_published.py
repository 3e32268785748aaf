"""Google's published answers (``fixtures/gemini``, ``fixtures/vertex``,
``fixtures/vertex_anthropic``, each citing its source) through the gateway's translators: Gemini
API text, function-call, cached-content, blocked-prompt and batch-embedding answers; a Vertex AI
GenerateContentResponse; Claude's rawPredict answers on Vertex AI. Costs by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app import errors
from app.pricing import PriceBook, shipped_prices
from app.providers import anthropic_response, gemini_response
from app.providers.gemini_embed import read_batch_embed
from app.usage import Usage

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    assert found.pop("_source")
    return found


def test_gemini_text_answer() -> None:
    """The cookbook's text answer: the text whole, stop, and usage as Google counted it; with
    no modelVersion or responseId, the target's model and an id of the gateway's own."""
    answer = fixture("gemini/prompting_text.json")
    body, usage = gemini_response.to_chat_completion(answer, model="gemini-2.5-flash", created=1)
    text = answer["candidates"][0]["content"]["parts"][0]["text"]
    assert body["choices"][0]["message"]["content"] == text
    assert text.startswith("```python\n# Example list to be sorted")
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["model"] == "gemini-2.5-flash"
    assert body["id"].startswith("chatcmpl-")
    assert usage == Usage(prompt_tokens=9, completion_tokens=87)
    assert body["usage"]["total_tokens"] == answer["usageMetadata"]["totalTokenCount"]


def test_gemini_function_call_answer() -> None:
    """The cookbook's function call: one OpenAI tool call with its arguments, no text,
    finish_reason tool_calls (Gemini says STOP), no usage (the answer carries none)."""
    body, usage = gemini_response.to_chat_completion(
        fixture("gemini/function_call.json"), model="m", created=1)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "find_theaters"
    assert json.loads(call["function"]["arguments"]) == {"movie": "Barbie",
                                                         "location": "Mountain View, CA"}
    assert usage is None and "usage" not in body


def test_gemini_cached_content_answer_and_its_cost() -> None:
    """The cookbook's answer from a context cache: the cached tokens are part of the prompt
    and priced at the cached rate; by hand at gemini-2.5-flash's rates (the model its request
    names): $0.30/M fresh input, $0.03/M cached, $2.50/M output."""
    answer = fixture("gemini/cached_content.json")
    body, usage = gemini_response.to_chat_completion(answer, model="gemini-2.5-flash", created=1)
    assert body["choices"][0]["message"]["content"].startswith(
        "This is a transcript of the air-to-ground voice transmission")
    assert usage == Usage(prompt_tokens=323388, completion_tokens=397, cached_tokens=323383)
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 323383
    assert body["usage"]["total_tokens"] == answer["usageMetadata"]["totalTokenCount"]
    by_hand = ((323388 - 323383) * 0.30 + 323383 * 0.03 + 397 * 2.50) / 1_000_000
    assert shipped_prices()["gemini-2.5-flash"].cost(usage) == pytest.approx(by_hand, rel=1e-12)


def test_gemini_blocked_prompt_is_a_clear_400() -> None:
    """The cookbook's blocked prompt (promptFeedback.blockReason, no candidates) is the
    client's 400 naming the reason and the messages, not a malformed-answer 502."""
    with pytest.raises(errors.UpstreamRejected) as caught:
        gemini_response.to_chat_completion(fixture("gemini/prompt_blocked.json"), model="m",
                                           created=1)
    assert caught.value.status_code == 400
    assert caught.value.code == "prompt_blocked" and caught.value.param == "messages"
    assert "SAFETY" in str(caught.value)


def test_gemini_batch_embeddings() -> None:
    """The cookbook's batchEmbedContents answer (vectors trimmed by the source): three
    vectors, in the order asked; one too many asked for is a 502."""
    answer = fixture("gemini/batch_embed_trimmed.json")
    vectors = read_batch_embed(answer, expected=3)
    assert vectors == [e["values"] for e in answer["embeddings"]]
    assert vectors[1][:2] == [-0.007975887, -0.02141119]
    with pytest.raises(errors.BadUpstreamResponse):
        read_batch_embed(answer, expected=4)


def test_vertex_generate_content_answer() -> None:
    """A Vertex AI GenerateContentResponse from Google's samples: Vertex's own avgLogprobs is
    ignored; the text, stop, usage and modelVersion as the model come through."""
    answer = fixture("vertex/batch_prediction_response.json")
    body, usage = gemini_response.to_chat_completion(answer, model="target", created=1)
    assert body["choices"][0]["message"]["content"].startswith(
        "Here's a list of the objects in the image:")
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["model"] == answer["modelVersion"]
    assert usage == Usage(prompt_tokens=264, completion_tokens=110)


def test_claude_on_vertex_text_answer() -> None:
    """Claude's rawPredict answer on Vertex AI: the text, stop, usage and Vertex's message id
    and model name; its cost by hand at Anthropic's list price for Claude 3.5 Sonnet ($3/M
    in, $15/M out), which the Vertex id claude-3-5-sonnet-v2@20241022 takes."""
    answer = fixture("vertex_anthropic/claude_text.json")
    body, usage = anthropic_response.to_chat_completion(answer, created=1)
    assert body["id"] == "msg_vrtx_01PbLXjy7XzfNMiH76f3s5Ep"
    assert body["model"] == "claude-3-5-sonnet-v2-20241022"
    assert body["choices"][0]["message"]["content"] == answer["content"][0]["text"]
    assert body["choices"][0]["finish_reason"] == "stop"
    assert usage == Usage(prompt_tokens=1587, completion_tokens=179)
    cost = PriceBook(shipped_prices()).cost("claude-3-5-sonnet-v2@20241022", usage)
    assert cost == pytest.approx((1587 * 3.00 + 179 * 15.00) / 1_000_000, rel=1e-12)


def test_claude_on_vertex_tool_use_answer() -> None:
    """Claude's tool-use answer on Vertex AI: its text and an OpenAI tool call with Vertex's
    tool id and the arguments, finish_reason tool_calls, usage."""
    body, usage = anthropic_response.to_chat_completion(
        fixture("vertex_anthropic/claude_tool_use.json"), created=1)
    message = body["choices"][0]["message"]
    assert message["content"].startswith("This appears to be a Golden-cheeked Warbler")
    (call,) = message["tool_calls"]
    assert call["id"] == "toolu_vrtx_01AoZske3Zi12oYewSYnng2z"
    assert call["function"]["name"] == "get_wildlife_region"
    assert json.loads(call["function"]["arguments"]) == {"animal": "Golden-cheeked Warbler"}
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert usage == Usage(prompt_tokens=1963, completion_tokens=99)
