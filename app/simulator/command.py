"""``switchboard simulate``: run the upstream simulator from the command line."""

from __future__ import annotations

import click

from app.simulator.app import serve
from app.simulator.engine import EngineOptions
from app.simulator.options import SimOptions

# Every route and per-request header the simulator serves is listed here (the headers are
# read in app/simulator/faults.py, but X-Sim-Azure-Filter, in azure.py, and the
# X-Sim-Replicate-* ones, in replicate.py): tests/simulator/test_command_help.py fails when
# one is served and not listed.
_EPILOG = """\b
Routes: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models (OpenAI and vLLM);
/openai/deployments/{name}/... (Azure OpenAI); POST /{tenant}/oauth2/v2.0/token (Microsoft
Entra ID) and GET /msi/token (App Service managed identity); /v1/messages (Anthropic);
/v2/chat, /v2/embed (Cohere);
/studio/v1/chat/completions (AI21); /health, /version,
/tokenize, /metrics (vLLM); /hf-router/v1/chat/completions (Hugging Face router), /tgi,
/tgi/generate, /tgi/generate_stream, /tgi/v1/chat/completions (TGI), /tei/embed (TEI);
/_sim/state, /_sim/stats, /_sim/requests, /_sim/reset (admin).
Replicate: /v1/models/{o}/{n}/predictions, /v1/deployments/{o}/{n}/predictions, /v1/predictions,
/v1/predictions/{id}[/cancel|/stream] (X-Sim-Replicate-Duration-Ms, X-Sim-Replicate-Wait-Ms,
X-Sim-Replicate-Settle-Ms, X-Sim-Replicate-Fail: 1).
AWS (SigV4 with the test keys of app/simulator/aws_auth.py): /bedrock/model/{id}/converse,
/converse-stream, /invoke, /invoke-with-response-stream (Bedrock);
/sagemaker/endpoints/{name}/invocations, /invocations-response-stream (SageMaker).
Google: /gemini/v1beta/models/{m}:generateContent|streamGenerateContent|batchEmbedContents
(Gemini API); /vertex/v1/projects/{p}/locations/{l}/publishers/google/models/{m}:
generateContent|streamGenerateContent|predict and POST /vertex/token (Vertex AI);
/vertex/v1/projects/{p}/locations/{l}/publishers/anthropic/models/{m}:rawPredict|streamRawPredict
(Claude on Vertex AI).

\b
Per-request headers (all of them; described in app/simulator/faults.py, azure.py):
  answers:  X-Sim-TTFT-Ms, X-Sim-TPOT-Ms, X-Sim-Completion-Tokens: N, X-Sim-Refusal: 1,
            X-Sim-Fingerprint: FP, X-Sim-Model: NAME, X-Sim-Cache-Read-Tokens: N,
            X-Sim-Usage-Count: name=JSON (every usage count "name" says JSON instead),
            X-Sim-Azure-Filter: async (Azure's asynchronous content filter on chat streams).
  errors:   X-Return-Error: STATUS, X-Sim-Retry-After: VALUE (its Retry-After),
            X-Sim-Echo-Key: 1 (the error echoes the request's credential).
  streams:  X-Sim-Cut-After: N (drop the connection), X-Sim-Error-After: N (in-band error),
            X-Sim-End-After: N (end with no finish_reason nor terminator),
            X-Sim-Done-After: N (end as finished, with no finish_reason),
            X-Sim-Aws-Error-Code: CODE (an AWS stream's error as an event-stream error message),
            X-Sim-Role-Early: 1 (OpenAI's role chunk before the first token),
            X-Sim-Split-Pair: 1 (an emoji cut between two chunks' UTF-16 escapes).
  bodies:   X-Sim-Hang: 1 (never answer), X-Sim-Cut-Body: N (send N bytes of the answer, then
            drop the connection), X-Sim-Garbage: 1 (an HTML page for the answer).

\b
Process-wide drift, set at runtime with POST /_sim/state (JSON, partial; headers still win;
POST /_sim/reset restores the defaults and reseeds the draws):
  completion_tokens: N >= 1 | null   natural answer length (null: --default-completion-tokens)
  length_spread: 0..1                each answer's length drawn from L*(1-s)..L*(1+s)
  refusal_rate: 0..1                 share of answers that are a refusal
  fingerprint: FP | null             system_fingerprint reported
  model: NAME | null                 model reported
"""


@click.command("simulate", epilog=_EPILOG)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port to listen on.")
@click.option("--ttft-ms", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="Time to first token, in milliseconds (non-streaming answers wait it too).")
@click.option("--tpot-ms", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="Time per output token after the first, in milliseconds.")
@click.option("--jitter", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Uniform +/- fraction applied to every wait (0.1 = +/-10%).")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the jitter and drift draws (same seed and request order, same "
                   "waits and answers).")
@click.option("--vllm-version", default="0.12.0", show_default=True,
              help="vLLM version to play: flat error bodies up to 0.10.0, guided_* structured "
                   "output before 0.12, gpu_-prefixed cache metrics before 0.10.")
@click.option("--model", "models", multiple=True, metavar="NAME",
              help="A model to serve (repeatable). Unset: any model name is accepted; set: "
                   "other names get 404.")
@click.option("--max-model-len", default=8192, show_default=True, type=click.IntRange(min=1),
              help="Context length: prompt plus max_tokens beyond it is a 400.")
@click.option("--default-completion-tokens", default=16, show_default=True,
              type=click.IntRange(min=0),
              help="Length of an answer in tokens before max_tokens or stop cut it.")
@click.option("--embedding-dimensions", default=384, show_default=True,
              type=click.IntRange(1, 8192),
              help="Length of embedding vectors for models of no known length (known ones, "
                   "e.g. text-embedding-3-small's 1536, keep theirs).")
@click.option("--vllm-max-seqs", default=0, show_default=True, type=click.IntRange(min=0),
              help="Play vLLM's queueing for chat: at most N requests generate at once, the "
                   "rest wait (0: off). Prefill, decode and the prefix cache then set the "
                   "latency and /metrics; --tpot-ms is the decode time of one token.")
@click.option("--vllm-kv-tokens", default=65_536, show_default=True,
              type=click.IntRange(min=16), help="KV cache size in tokens (with --vllm-max-seqs).")
@click.option("--vllm-prefill-ms", default=0.1, show_default=True,
              type=click.FloatRange(min=0),
              help="Prefill time per prompt token not in the prefix cache, in milliseconds.")
def simulate(host: str, port: int, ttft_ms: float, tpot_ms: float, jitter: float, seed: int,
             vllm_version: str, models: tuple[str, ...], max_model_len: int,
             default_completion_tokens: int, embedding_dimensions: int, vllm_max_seqs: int,
             vllm_kv_tokens: int, vllm_prefill_ms: float) -> None:
    """Play upstream LLM providers on HTTP, every wire format the gateway speaks.

    OpenAI, Azure OpenAI (and Microsoft Entra ID's token endpoint), vLLM, Anthropic, Cohere,
    AI21, Hugging Face (router, TGI, TEI), Replicate, AWS Bedrock and SageMaker (SigV4 checked),
    Google's Gemini API and Vertex AI (Gemini and Claude): the paths are listed below.

    Answers are deterministic, usage numbers agree with the content, and latency follows
    --ttft-ms/--tpot-ms. For tests, benchmarks and load tests: no provider is paid.
    """
    options = SimOptions(ttft_ms=ttft_ms, tpot_ms=tpot_ms, jitter=jitter, seed=seed,
                         vllm_version=vllm_version, models=models, max_model_len=max_model_len,
                         default_completion_tokens=default_completion_tokens,
                         embedding_dimensions=embedding_dimensions,
                         engine=EngineOptions(max_seqs=vllm_max_seqs, kv_tokens=vllm_kv_tokens,
                                              prefill_ms=vllm_prefill_ms, tpot_ms=tpot_ms)
                         if vllm_max_seqs else None)
    click.echo(f"Simulator listening on http://{host}:{port} (vLLM {vllm_version})", err=True)
    serve(host=host, port=port, options=options)
