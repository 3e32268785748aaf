"""What one call to the ``mock`` provider may ask for is bounded (``app.providers.mock`` and
``mock_answer``), so that no call holds the worker's event loop: each bound is a 400 naming the
parameter, end to end through a gateway running the embedded default config."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from app.providers.mock import MAX_DIMENSIONS, MAX_EMBEDDING_VALUES
from app.providers.mock_answer import MAX_CHOICES, MAX_GENERATED_TOKENS
from tests.providers.embedded import embedded_gateway


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    with embedded_gateway(tmp_path_factory.mktemp("mock-bounds")) as sdk:
        yield sdk


def refused(call: Any, **asked: Any) -> dict[str, Any]:
    """The error body of a call the gateway refuses with a 400."""
    with pytest.raises(openai.BadRequestError) as info:
        call(**asked)
    body: dict[str, Any] = info.value.body  # type: ignore[assignment]
    assert body["type"] == "invalid_request_error"
    return body


def test_embedding_dimensions_are_bounded(client: openai.OpenAI) -> None:
    """A request's ``dimensions`` past the bound (as the config's is) is refused, as the
    simulator refuses it; at the bound it is served."""
    error = refused(client.embeddings.create, model="mock-embed", input="x",
                    dimensions=MAX_DIMENSIONS + 1)
    assert error["param"] == "dimensions"
    assert error["message"] == f"dimensions must be at most {MAX_DIMENSIONS}."
    served = client.embeddings.create(model="mock-embed", input="x", dimensions=MAX_DIMENSIONS)
    assert len(served.data[0].embedding) == MAX_DIMENSIONS


def test_the_numbers_of_one_embeddings_call_are_bounded(client: openai.OpenAI) -> None:
    """Inputs times dimensions past the bound is refused, naming ``input``."""
    inputs = MAX_EMBEDDING_VALUES // 1024 + 1
    error = refused(client.embeddings.create, model="mock-embed",
                    input=[f"text {i}" for i in range(inputs)], dimensions=1024)
    assert error["param"] == "input" and "at most" in error["message"]
    served = client.embeddings.create(model="mock-embed", input=["a", "b"], dimensions=1024)
    assert [len(d.embedding) for d in served.data] == [1024, 1024]


@pytest.mark.parametrize(("prompts", "n", "param"), [
    (MAX_CHOICES + 1, 1, "prompt"), (MAX_CHOICES // 2 + 1, 2, "n")])
def test_completion_choices_are_bounded(client: openai.OpenAI, prompts: int, n: int,
                                        param: str) -> None:
    """Prompts times ``n`` past the bound is refused, naming what to lower."""
    error = refused(client.completions.create, model="mock-chat", prompt=["a"] * prompts, n=n,
                    max_tokens=4)
    assert error["param"] == param
    assert f"{prompts} prompts times n={n}" in error["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_completion_tokens_are_bounded(client: openai.OpenAI, stream: bool) -> None:
    """Echoes of long prompts, all choices together, past the bound of generated tokens are
    refused, naming ``max_tokens``; with ``max_tokens`` cutting them they are served."""
    prompt = "word " * (MAX_GENERATED_TOKENS // 4)
    error = refused(client.completions.create, model="mock-chat", prompt=[prompt] * 2, n=2,
                    stream=stream)
    assert error["param"] == "max_tokens"
    served = client.completions.create(model="mock-chat", prompt=[prompt] * 2, n=2,
                                       max_tokens=3)
    assert [c.finish_reason for c in served.choices] == ["length"] * 4


def test_chat_tokens_are_bounded(client: openai.OpenAI) -> None:
    """``n`` echoes of a long message past the bound are refused, naming ``max_tokens``."""
    text = "word " * (MAX_GENERATED_TOKENS // 8)
    messages: Any = [{"role": "user", "content": text}]
    error = refused(client.chat.completions.create, model="mock-chat", messages=messages, n=16)
    assert error["param"] == "max_tokens"
    served = client.chat.completions.create(model="mock-chat", messages=messages, n=16,
                                            max_tokens=2)
    assert len(served.choices) == 16
