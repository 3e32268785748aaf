"""Throughput through each provider type: non-streamed chat through the gateway to the simulator
playing that provider's API, against the ``openai`` type, in one run. Target (issue 11): every
type within 10% of ``openai``'s throughput.

    .venv/bin/python -m bench.providers [--duration 8] [--rounds 2] [--types openai,cohere,...]

The gateway (core 0, call log off, master key) serves one public model on one target of the type
under test; the simulator and the closed-loop load generator (32 connections) share core 1. A
round measures every type once, rounds alternate the order, and the report gives the medians:
requests/s and the gateway's CPU time per request (from /proc; it hardly moves when something
else uses the machine, unlike requests/s), each as a ratio to ``openai``'s. The simulator's own
cost differs by dialect (Replicate's prediction objects, Cohere's event types), and it shares
the load core, so requests/s carries some of the simulator; the CPU-per-request column is the
gateway's alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from app.simulator import SimOptions, azure_entra, create_app, gemini
from app.simulator.aws_auth import TEST_ACCESS_KEY, TEST_SECRET_KEY
from app.simulator.azure_tls import serve_tls
from bench.calllog_overhead import KEY, gateway_env, switchboard
from bench.drivers import Request, loadgen
from bench.metrics_overhead import cpu_seconds
from tests.servers import free_port

BODY = '{"model":"chat","messages":[{"role":"user","content":"hello bench"}],"max_tokens":40}'


def providers(sim: str, authority: tuple[str, Path] | None = None
              ) -> dict[str, tuple[dict[str, Any], str]]:
    """Each type's provider config against the simulator, and its target model.
    ``authority``: Entra's token endpoint over TLS and its CA, for ``azure-entra`` (the token is
    fetched once per gateway; every request then carries it)."""
    url, ca = authority or ("https://unused.invalid", Path("unused.pem"))
    entra = {"type": "client_secret", "tenant_id": azure_entra.TENANT_ID,
             "client_id": azure_entra.CLIENT_ID, "client_secret": azure_entra.CLIENT_SECRET,
             "authority": url, "ca_bundle": str(ca)}
    return {
        "openai": ({"type": "openai", "base_url": f"{sim}/v1", "api_key": "sk-sim"},
                   "gpt-4o-mini"),
        "anthropic": ({"type": "anthropic", "base_url": sim, "api_key": "sk-ant-sim"},
                      "claude-sonnet-4-20250514"),
        "cohere": ({"type": "cohere", "base_url": sim, "api_key": "co-sim"},
                   "command-a-03-2025"),
        "ai21": ({"type": "ai21", "base_url": f"{sim}/studio/v1", "api_key": "ai21-sim"},
                 "jamba-mini"),
        "huggingface": ({"type": "huggingface", "base_url": f"{sim}/hf-router/v1",
                         "api_key": "hf_sim"}, "meta-llama/Llama-3.1-8B-Instruct:fastest"),
        "huggingface-tgi": ({"type": "huggingface", "api": "tgi", "base_url": f"{sim}/tgi",
                             "api_key": "hf_sim"}, "tgi"),
        "replicate": ({"type": "replicate", "base_url": f"{sim}/v1", "api_token": "r8_sim"},
                      "meta/meta-llama-3-8b-instruct"),
        "azure_openai": ({"type": "azure_openai", "endpoint": sim, "api_key": "az-sim"},
                         "gpt-4o-mini"),
        "azure-entra": ({"type": "azure_openai", "endpoint": sim, "auth": entra},
                        "gpt-4o-mini"),
        "bedrock": ({"type": "bedrock", "region": "us-east-1", "base_url": f"{sim}/bedrock",
                     "access_key_id": TEST_ACCESS_KEY, "secret_access_key": TEST_SECRET_KEY},
                    "anthropic.claude-3-5-haiku-20241022-v1:0"),
        "sagemaker": ({"type": "sagemaker", "region": "us-east-1",
                       "base_url": f"{sim}/sagemaker", "access_key_id": TEST_ACCESS_KEY,
                       "secret_access_key": TEST_SECRET_KEY}, "llm-endpoint"),
        "gemini": ({"type": "gemini", "base_url": f"{sim}/gemini/v1beta",
                    "api_key": gemini.API_KEY}, "gemini-2.5-flash"),
        "vertex": ({"type": "vertex", "project": "bench", "location": "us-central1",
                    "base_url": f"{sim}/vertex/v1", "credentials_json": vertex_key(sim)},
                   "gemini-2.5-flash"),
        "vertex_anthropic": ({"type": "vertex_anthropic", "project": "bench",
                              "location": "us-east5", "base_url": f"{sim}/vertex/v1",
                              "credentials_json": vertex_key(sim)}, "claude-sonnet-4@20250514"),
    }


def vertex_key(sim: str) -> str:
    """A throwaway service-account key whose token endpoint is the simulator's (the token is
    fetched once per gateway, refreshed before its hour is up; every request carries it)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    return json.dumps({"type": "service_account", "project_id": "bench", "private_key": pem,
                       "private_key_id": "bench", "client_email": "bench@bench.iam",
                       "client_id": "1", "token_uri": f"{sim}/vertex/token"})


def config(provider: dict[str, Any], model: str) -> dict[str, Any]:
    return {"providers": {"p": provider},
            "models": {"chat": {"targets": [{"provider": "p", "model": model}]}},
            "drift": {"embedding": {"sample_rate": 0}}}


def measure(raw: dict[str, Any], work: Path, *, seconds: float) -> tuple[float, float]:
    """Requests/s and the gateway's CPU microseconds per request of one closed-loop run."""
    with switchboard("serve", port=free_port(), env=gateway_env(raw, work), core=0) as url:
        request = Request(url=f"{url}/v1/chat/completions", body=BODY,
                          headers={"Authorization": f"Bearer {KEY}"})
        loadgen(request, mode="closed", core=1, duration_s=2, connections=32)  # warm-up
        before = cpu_seconds(url.pid)
        report = loadgen(request, mode="closed", core=1, duration_s=seconds, connections=32)
        cpu_us = (cpu_seconds(url.pid) - before) / max(1, report.requests) * 1e6
    if report.errors:
        raise RuntimeError(f"errors during the run: {report.errors_detail}")
    return report.requests / report.duration_s, cpu_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--types", default="", help="comma-separated (default: all)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sb-providerbench-"))
    names = [n for n in args.types.split(",") if n]
    with switchboard("simulate", port=free_port(), core=1) as simulator, \
            contextlib.ExitStack() as stack:
        authority = None
        if not names or "azure-entra" in names:
            authority = stack.enter_context(serve_tls(create_app(SimOptions()), work))
        every = providers(str(simulator), authority)
        names = names or list(every)
        if "openai" not in names:
            names.insert(0, "openai")
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
        for round_ in range(args.rounds):
            for name in names if round_ % 2 == 0 else list(reversed(names)):
                provider, model = every[name]
                results[name].append(measure(config(provider, model), work,
                                             seconds=args.duration))
                rps, cpu = results[name][-1]
                print(f"  round {round_ + 1}, {name}: {rps:.0f} req/s, {cpu:.0f} us CPU/request",
                      flush=True)
    medians = {name: (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
               for name, runs in results.items()}
    base_rps, base_cpu = medians["openai"]
    print(f"\n{'type':<18} {'req/s':>8} {'vs openai':>10} {'CPU us/req':>11} {'vs openai':>10}"
          f"   (medians of {args.rounds} rounds, {args.duration:.0f} s each)")
    for name, (rps, cpu) in medians.items():
        print(f"{name:<18} {rps:>8.0f} {rps / base_rps:>9.1%} {cpu:>11.0f} "
              f"{cpu / base_cpu:>9.2f}x")


if __name__ == "__main__":
    main()
