"""A gateway serving the embedded default config (the ``mock`` provider), for the mock's
end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openai
from pydantic import SecretStr

from app.config import embedded_config
from app.main import create_app
from app.settings import Settings
from tests.servers import serve

KEY = "sk-test-master-key-0123456789"


@contextmanager
def embedded_gateway(directory: Path) -> Iterator[openai.OpenAI]:
    """The openai SDK on a gateway serving the embedded default config, its call log in
    ``directory`` (no embedding drift, so no encoder process)."""
    config = embedded_config({})
    drift = config.drift.model_copy(update={
        "embedding": config.drift.embedding.model_copy(update={"sample_rate": 0.0})})
    settings = Settings(master_key=SecretStr(KEY), config=None,
                        database_url=f"sqlite+aiosqlite:///{directory / 'calls.db'}",
                        spool_dir=directory / "spool")
    app = create_app(settings, config=config.model_copy(update={"drift": drift}),
                     strict_telemetry=True)
    with serve(app) as url, openai.OpenAI(base_url=url + "/v1", api_key=KEY,
                                          max_retries=0) as sdk:
        yield sdk
