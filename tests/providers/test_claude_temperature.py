"""Claude's temperature range (0..1) wherever the gateway translates for it: Anthropic, Vertex
AI and Bedrock Converse refuse more with a 400 before anything is sent; so does Converse for
every other model, whose ``inferenceConfig.temperature`` is 0 to 1 (botocore's model)."""

from __future__ import annotations

import pytest

from app import errors
from app.providers import anthropic_request, bedrock_converse
from app.providers.base import ChatCall, Json, Target
from app.schemas import ChatRequest

CLAUDE_IDS = ["anthropic.claude-3-5-haiku-20241022-v1:0",
              "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
              "arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
              "us.anthropic.claude-3-5-haiku-20241022-v1:0"]


def call(temperature: float) -> ChatCall:
    body: Json = {"model": "m", "temperature": temperature,
                  "messages": [{"role": "user", "content": "Hi"}]}
    return ChatCall(request=ChatRequest.model_validate(body), body=body)


@pytest.mark.parametrize("model", CLAUDE_IDS, ids=["model-id", "profile", "profile-arn"])
def test_bedrock_claude_temperature_over_one_is_a_400(model: str) -> None:
    """Claude on Bedrock takes a temperature up to 1: more is a 400 on ``temperature``."""
    with pytest.raises(errors.InvalidRequest) as raised:
        bedrock_converse.translate_request(call(1.5), target=Target(provider="p", model=model),
                                           max_tokens_default=None)
    assert raised.value.param == "temperature"


def test_bedrock_claude_temperature_one_goes_through() -> None:
    """Claude's upper bound itself is sent as ``inferenceConfig.temperature``."""
    payload = bedrock_converse.translate_request(
        call(1.0), target=Target(provider="p", model=CLAUDE_IDS[0]), max_tokens_default=None)
    assert payload["inferenceConfig"]["temperature"] == 1.0


def test_bedrock_other_models_temperature_over_one_is_a_400() -> None:
    """Converse's ``InferenceConfiguration.temperature`` is 0 to 1 whatever the model (AWS's
    API reference, botocore's ``InferenceConfigurationTemperatureFloat``): Llama's 1.5 is a 400
    before anything is sent, not Bedrock's ValidationException after a round trip."""
    with pytest.raises(errors.InvalidRequest) as raised:
        bedrock_converse.translate_request(
            call(1.5), target=Target(provider="p", model="meta.llama3-1-8b-instruct-v1:0"),
            max_tokens_default=None)
    assert raised.value.param == "temperature"


def test_vertex_claude_temperature_over_one_is_a_400() -> None:
    """Claude on Vertex AI (the Anthropic translation, a Vertex model id) refuses it too."""
    with pytest.raises(errors.InvalidRequest) as raised:
        anthropic_request.translate_request(
            call(1.5), target=Target(provider="p", model="claude-sonnet-4@20250514"),
            max_tokens_default=64, stream=False)
    assert raised.value.param == "temperature"
