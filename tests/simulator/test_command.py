"""The ``simulate`` click command."""

from __future__ import annotations

from click.testing import CliRunner

from app.simulator.command import simulate


def test_help_lists_every_option() -> None:
    """--help documents every option and the per-request headers."""
    result = CliRunner().invoke(simulate, ["--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--ttft-ms", "--tpot-ms", "--jitter", "--seed",
                   "--vllm-version", "--model", "--max-model-len",
                   "--default-completion-tokens", "--embedding-dimensions",
                   "X-Return-Error", "X-Sim-Cut-After"):
        assert option in result.output


def test_invalid_values_are_refused() -> None:
    """Out-of-range values fail with a usage error before anything starts."""
    assert CliRunner().invoke(simulate, ["--jitter", "2"]).exit_code == 2
    assert CliRunner().invoke(simulate, ["--port", "-1"]).exit_code == 2


def test_help_names_every_provider_it_plays() -> None:
    """--help names each provider README's "The upstream simulator" lists, not five of them."""
    shown = " ".join(CliRunner().invoke(simulate, ["--help"]).output.split())
    for name in ("OpenAI", "Azure OpenAI", "Entra ID", "vLLM", "Anthropic", "Cohere", "AI21",
                 "Hugging Face", "TGI", "TEI", "Replicate", "Bedrock", "SageMaker", "Gemini API",
                 "Vertex AI"):
        assert name in shown, name
