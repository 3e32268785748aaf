"""The simulator's Hugging Face dialects, read by Hugging Face's own client (``huggingface_hub``'s
``InferenceClient``) and parsed into its own types: a field the SDK rejects or misreads is a
simulator bug."""

from __future__ import annotations

import pytest
from huggingface_hub import (
    ChatCompletionInputJSONSchema,
    ChatCompletionInputResponseFormatJSONSchema,
    ChatCompletionInputStreamOptions,
    ChatCompletionOutput,
    ChatCompletionStreamOutput,
    InferenceClient,
    TextGenerationOutput,
    TextGenerationStreamOutput,
)
from huggingface_hub.errors import HfHubHTTPError, ValidationError

TOKEN = "hf_sdk_token"
PROMPT = "Tell me about switchboards"


def client(base_url: str, **headers: str) -> InferenceClient:
    return InferenceClient(base_url=base_url, api_key=TOKEN, headers=headers or None)


def test_text_generation_with_details(simulator: str) -> None:
    """``text_generation(details=True)`` on TGI's route parses into TextGenerationOutput: the
    text is the tokens joined, and the counts add up."""
    out = client(simulator + "/tgi").text_generation(
        PROMPT, details=True, decoder_input_details=True, max_new_tokens=6, seed=3)
    assert isinstance(out, TextGenerationOutput)
    assert out.details is not None
    assert out.details.finish_reason == "length"
    assert out.details.generated_tokens == len(out.details.tokens) == 6
    assert "".join(t.text for t in out.details.tokens) == out.generated_text
    assert out.details.prefill[0].text == "<s>" and out.details.prefill[0].logprob is None
    assert out.details.seed == 3


def test_text_generation_plain_text(simulator: str) -> None:
    """Without details the SDK returns the generated text alone."""
    text = client(simulator + "/tgi").text_generation(PROMPT, max_new_tokens=4)
    assert isinstance(text, str) and text.startswith("Simulated")


def test_text_generation_stream(simulator: str) -> None:
    """``stream=True, details=True``: every event is a TextGenerationStreamOutput; the last
    carries the full text, which the non-special tokens spell, and details with input_length."""
    hf = client(simulator + "/tgi")  # kept: the stream reads through its open connection
    events = list(hf.text_generation(PROMPT, details=True, stream=True, max_new_tokens=40))
    assert all(isinstance(e, TextGenerationStreamOutput) for e in events)
    last = events[-1]
    assert last.generated_text == "".join(e.token.text for e in events if not e.token.special)
    assert last.token.special and last.token.text == "</s>"
    assert last.details is not None and last.details.finish_reason == "eos_token"
    assert last.details.generated_tokens == len(events)
    assert last.details.input_length == 6
    assert all(e.generated_text is None and e.details is None for e in events[:-1])
    assert [e.index for e in events] == list(range(1, len(events) + 1))


def test_text_generation_validation_error_is_tgis(simulator: str) -> None:
    """A parameter TGI refuses is a 422 whose error_type the SDK reads as its own
    ValidationError (the SDK's parser of TGI errors accepts the body)."""
    with pytest.raises(ValidationError) as caught:
        client(simulator + "/tgi").text_generation(PROMPT, temperature=0.0, max_new_tokens=2)
    assert str(caught.value) == "Input validation error: `temperature` must be strictly positive"
    cause = caught.value.__cause__
    assert isinstance(cause, HfHubHTTPError) and cause.response.status_code == 422


def test_feature_extraction_on_tei(simulator: str) -> None:
    """``feature_extraction`` posts to TEI's /embed (as TEI's docs point it) and reads a float32
    array, one unit-length row per input."""
    vectors = client(simulator + "/tei/embed").feature_extraction(["one", "two", "three"])
    assert vectors.shape == (3, 384)
    assert str(vectors.dtype) == "float32"
    assert abs(float((vectors[0] ** 2).sum()) - 1.0) < 1e-4


def test_chat_completion_on_tgi_and_router(simulator: str) -> None:
    """``chat_completion`` on TGI's Messages API and on the router parses into the SDK's chat
    types, plain and streamed with usage."""
    messages = [{"role": "user", "content": PROMPT}]
    for base_url in (simulator + "/tgi", simulator + "/hf-router"):
        hf = client(base_url)
        out = hf.chat_completion(messages, max_tokens=5)
        assert isinstance(out, ChatCompletionOutput)
        assert out.choices[0].message.content and out.usage.completion_tokens == 5
        chunks = list(hf.chat_completion(
            messages, max_tokens=5, stream=True,
            stream_options=ChatCompletionInputStreamOptions(include_usage=True)))
        assert all(isinstance(c, ChatCompletionStreamOutput) for c in chunks)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == out.choices[0].message.content
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


def test_chat_completion_json_schema_through_the_sdk(simulator: str) -> None:
    """The SDK rewrites json_schema into TGI's grammar form itself; the simulator's TGI accepts
    it and answers the schema's instance."""
    schema: dict[str, object] = {"type": "object", "properties": {"n": {"type": "integer"}},
                                 "required": ["n"]}
    out = client(simulator + "/tgi").chat_completion(
        [{"role": "user", "content": "count"}],
        response_format=ChatCompletionInputResponseFormatJSONSchema(
            type="json_schema", json_schema=ChatCompletionInputJSONSchema(name="n",
                                                                          schema=schema)))
    assert out.choices[0].message.content == '{"n":0}'


def test_missing_token_is_refused(simulator: str) -> None:
    """Without a token the endpoint answers 401."""
    hf = InferenceClient(base_url=simulator + "/tgi", api_key="")
    with pytest.raises(HfHubHTTPError) as caught:
        hf.text_generation(PROMPT, max_new_tokens=2)
    assert caught.value.response.status_code == 401
