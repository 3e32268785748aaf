"""An embedding request too large for a TPM limit is told to send fewer or shorter inputs: it
asks for no output, so "Lower max_tokens" would point at a field it does not have."""

from __future__ import annotations

import pytest

from app import errors
from app.api.incoming import Incoming
from app.config import parse_config
from app.gateway import Gateway
from app.limits import Bucket, LocalLimiter
from app.pipeline import Caller, Pipeline
from app.pricing import PriceBook
from app.schemas import EmbeddingRequest
from app.stages.admit import Admit
from tests.api.conftest import ListSink

CONFIG = parse_config({
    "providers": {"mock": {"type": "mock"}},
    "models": {"embed": {"targets": [{"provider": "mock", "model": "mock-embed"}]}},
}, {})


async def test_embedding_too_large_names_its_inputs_not_max_tokens() -> None:
    gateway = Gateway(config=CONFIG, providers={}, prices=PriceBook({}), sink=ListSink(),
                      pipeline=Pipeline())

    async def receive() -> dict[str, object]:
        return {"type": "http.disconnect"}

    call = gateway.open(Incoming(path="/v1/embeddings", headers={}, receive=receive))
    call.request = EmbeddingRequest.model_validate({"model": "embed", "input": "word " * 1200})
    call.caller = Caller("key", key_id="k", buckets=(Bucket("key", "k", None, 1000, None),))
    with pytest.raises(errors.TokensRateLimited) as caught:
        await Admit(LocalLimiter(), output_reservation=4096).on_request(call)
    message = caught.value.message
    assert message.startswith("Request too large for this key's tokens per minute: limit 1000, "
                              "requested 1200 (the inputs' estimated tokens).")
    assert message.endswith("Send fewer or shorter inputs.")
    assert "max_tokens" not in message
