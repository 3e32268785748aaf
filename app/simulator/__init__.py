"""The upstream simulator: every provider wire format the gateway speaks, on loopback (OpenAI,
Azure OpenAI, vLLM, Anthropic, Cohere, AI21, Hugging Face, Replicate, AWS, Google).

``create_app(SimOptions(...))`` builds the ASGI app; ``serve(host=..., port=..., options=...)`` runs
it with uvicorn; ``app.simulator.command.simulate`` is the ``switchboard simulate`` command.
"""

from app.simulator.app import create_app, serve
from app.simulator.options import SimOptions

__all__ = ["SimOptions", "create_app", "serve"]
