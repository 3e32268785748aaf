"""What ``switchboard check-config`` warns of in a valid config: settings a gateway serves, but
likely not as meant (the config is not refused).

- ``mixed_embeddings``: a public model whose embedding targets are different upstream models
  (or the same model at different sizes). Each answers from its own vector space: which target
  serves a call (the order, a fallback, a target that refuses token ids or ``dimensions``, a
  privacy policy's ``embeddings: private_only``) decides which space the vector is in, with
  status 200 and nothing telling the client, and vectors of different spaces compared in a
  search index are silently wrong. A target is an embedding target when its provider serves
  embeddings only (``local``, a TEI endpoint) or it serves them and its model's name says so
  (``EMBEDDING_NAMES``: ``embed``, or an open embedding family's name). Targets are compared by
  model name (``models/`` dropped; every ``local`` target is all-MiniLM-L6-v2) and the size
  their params set; Azure OpenAI targets are left out (a deployment's name need not be its
  model's).
"""

from __future__ import annotations

from app.config import GatewayConfig, TargetConfig
from app.providers import serves

EMBEDDING_NAMES = ("embed", "bge", "minilm", "mpnet", "gte-", "e5-")
"""Words in a model name that make it an embedding model (``text-embedding-3-small``,
``embed-v4.0``, ``BAAI/bge-large-en-v1.5``, ``all-MiniLM-L6-v2``, ``thenlper/gte-large``,
``intfloat/e5-large-v2``)."""
SIZE_PARAMS = ("dimensions", "output_dimension", "outputDimensionality")
"""Target params that set an embedding's size, as the embedding providers read them."""


def warnings(config: GatewayConfig) -> list[str]:
    """Every warning for ``config``, one line each."""
    return mixed_embeddings(config)


def mixed_embeddings(config: GatewayConfig) -> list[str]:
    """The public models whose embedding targets are different models (see the module)."""
    found = []
    for name, model in config.models.items():
        kinds = {kind for target in model.targets
                 if (kind := _embedding(config, target)) is not None}
        if len(kinds) > 1:
            found.append(
                f"models.{name}: its embedding targets are different models "
                f"({', '.join(sorted(kinds))}): each answers from its own vector space, so "
                "which target serves a call (order, fallback, a target refusing token ids or "
                "dimensions, a privacy policy) changes the space of the vector it returns; "
                "give each embedding model its own public name (ignore this if they are the "
                "same model under different names)")
    return found


def _embedding(config: GatewayConfig, target: TargetConfig) -> str | None:
    """The model (and size) an embedding target answers with; None for a target that is not
    one, or cannot be told (an Azure deployment)."""
    provider = config.providers[target.provider]
    offered = serves(provider)
    if "embed" not in offered or provider.type == "azure_openai":
        return None
    if provider.type == "local":
        kind = "all-MiniLM-L6-v2"
    elif offered == frozenset({"embed"}) or any(w in target.model.lower()
                                                for w in EMBEDDING_NAMES):
        kind = target.model.removeprefix("models/")
    else:
        return None
    sizes = [target.params[p] for p in SIZE_PARAMS if p in target.params]
    return f"{kind} ({sizes[0]} dimensions)" if sizes else kind
