"""The upstream simulator: OpenAI, Azure OpenAI, vLLM and Anthropic wire formats on loopback.

``create_app(SimOptions(...))`` builds the ASGI app; ``serve(host=..., port=..., options=...)`` runs
it with uvicorn; ``app.simulator.command.simulate`` is the ``switchboard simulate`` command.
"""

from app.simulator.app import create_app, serve
from app.simulator.options import SimOptions

__all__ = ["SimOptions", "create_app", "serve"]
