"""What a prompt template costs a request: the template stage's work on a chat body with a warm
cache (the label lookup and the compiled version both in memory, as for every call after the
first on a worker), and what a cold lookup costs against the embedded SQLite.

    .venv/bin/python -m bench.prompts_overhead [--n 20000]

Measures, per call, in one process: ``reference`` (validate the ``prompt`` field), the cached
label and version lookups, ``render`` (bind 3 variables, one a 1 KB text, into 2 messages) and
``apply`` (messages first, defaults in), i.e. everything ``Template.on_body`` does; then a cold
lookup (caches dropped: one label query and one version query) on SQLite. Prints the median and
p99 in microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from app.config import Limits
from app.db.engine import make_engine
from app.db.migrate import upgrade
from app.prompts import PromptStore, TemplateCreate, VersionSpec
from app.prompts.library import PromptLibrary
from app.stages.template import apply, reference, render

SPEC = {
    "messages": [
        {"role": "system", "content": "You summarise {{ kind }} for {{ audience }}. Keep it "
                                      "under 50 words and never invent facts."},
        {"role": "user", "content": "Summarise this:\n\n{{ text }}\n\nEnd of text."},
    ],
    "variables": {"kind": {"type": "string", "default": "emails"},
                  "audience": {"type": "string"}, "text": {"type": "string"}},
    "params": {"temperature": 0.2, "max_tokens": 200},
}
TEXT = ("The quarterly report shows revenue up 4% and costs flat; the board asks for a plan "
        "to cut churn. ") * 11  # ~1 KB


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        await upgrade(url)
        engine = make_engine(url)
        store = PromptStore(engine)
        await store.create_template(TemplateCreate(
            id="summarise", version=VersionSpec.model_validate(SPEC), labels=["production"]))
        library = PromptLibrary(store, label_ttl_s=3600)
        field = {"id": "summarise", "label": "production",
                 "variables": {"audience": "the board", "text": TEXT}}
        max_bytes = Limits().max_body_bytes
        warm: list[float] = []
        for _ in range(n):
            body = {"model": "chat", "messages": [{"role": "user", "content": "Thanks"}],
                    "prompt": field}
            start = time.perf_counter()
            ref = reference(body["prompt"])
            number = await library.label(ref.id, ref.label or "production")
            version = await library.version(ref.id, number)
            apply(body, version, render(version, ref.variables, max_bytes=max_bytes))
            warm.append((time.perf_counter() - start) * 1e6)
        cold: list[float] = []
        for _ in range(min(n, 500)):
            library = PromptLibrary(store)
            start = time.perf_counter()
            number = await library.label("summarise", "production")
            await library.version("summarise", number)
            cold.append((time.perf_counter() - start) * 1e6)
        await engine.dispose()
    print(f"warm stage work per call ({n} calls): median {statistics.median(warm):.1f} us, "
          f"p99 {percentile(warm, 0.99):.1f} us")
    print(f"cold lookup on SQLite ({len(cold)}): median {statistics.median(cold):.0f} us, "
          f"p99 {percentile(cold, 0.99):.0f} us")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    asyncio.run(main(parser.parse_args().n))
