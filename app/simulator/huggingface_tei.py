"""TEI's native ``POST /embed``, as a Hugging Face Inference Endpoint at ``<sim>/tei``.

``{"inputs": str | [str], "normalize", "truncate", "truncation_direction", "prompt_name",
"dimensions"}`` -> a bare JSON array of vectors, in input order, with TEI's ``x-compute-tokens``
header. Unknown fields (``huggingface_hub`` sends ``parameters``) are ignored, as TEI's JSON parsing
ignores them. A token is required (401 without). TEI's checks and bodies
(``{"error", "error_type"}``): an empty batch is 400 ``Empty``; more than
``MAX_CLIENT_BATCH_SIZE`` inputs is 413 ``Validation``; a field of the wrong type is 422.
``dimensions`` truncates the model's (Matryoshka) vector, as TEI's ``infer.rs`` does: 0 and a size
above the model's own (``--embedding-dimensions``: the endpoint serves one model) are TEI's 422
``Validation`` ("`dimensions` should be positive", "`dimensions` should be smaller than the
maximum embedding dimension.").

Vectors are the simulator's deterministic ones (``embeddings.vector``) of the text with its
prompt (``prompt_name``'s ``"<name>: "`` prepended, so a prompt changes the vector); unit length
when ``normalize`` (TEI's default), else scaled by a text-dependent factor between 2 and 6.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.simulator import content
from app.simulator.asgi import Request, SimError, send_json
from app.simulator.core import Route, Sim, delay, faulted
from app.simulator.embeddings import MAX_DIMENSIONS, vector
from app.simulator.faults import read_knobs
from app.simulator.huggingface import check_token

MAX_CLIENT_BATCH_SIZE = 32
"""TEI's ``--max-client-batch-size`` default."""


def _type_error(field: str, expected: str) -> SimError:
    return SimError(422, f"Failed to deserialize the JSON body into the target type: {field}: "
                    f"invalid type, expected {expected}", kind="Validation")


def read_inputs(value: Any) -> list[str]:
    """``inputs``: a string or a list of strings."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        if not value:
            raise SimError(400, "`inputs` cannot be empty", kind="Empty")
        if all(isinstance(item, str) for item in value):
            return list(value)
    raise _type_error("inputs", "a string or a sequence of strings")


def _flag(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _type_error(key, "a boolean")
    return value


async def embed(sim: Sim, req: Request, route: Route) -> None:
    """Validate, wait the time to first token, answer the vectors."""
    check_token(req.headers)
    knobs = read_knobs(req)
    if await faulted(sim, req, knobs):
        return
    body = req.json_object()
    inputs = read_inputs(body.get("inputs"))
    if len(inputs) > MAX_CLIENT_BATCH_SIZE:
        raise SimError(413, f"batch size {len(inputs)} > maximum allowed batch size "
                       f"{MAX_CLIENT_BATCH_SIZE}", kind="Validation")
    normalize = _flag(body, "normalize", True)
    _flag(body, "truncate", False)
    if body.get("truncation_direction") not in (None, "left", "right", "Left", "Right"):
        raise _type_error("truncation_direction", "one of `Left`, `Right`")
    prompt = body.get("prompt_name")
    if prompt is not None and not isinstance(prompt, str):
        raise _type_error("prompt_name", "a string")
    dimensions = body.get("dimensions")
    size = sim.options.embedding_dimensions
    if dimensions is None:
        dimensions = size
    elif isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 0:
        raise _type_error("dimensions", "usize")
    elif dimensions == 0:
        raise SimError(422, "`dimensions` should be positive", kind="Validation")
    elif dimensions > min(size, MAX_DIMENSIONS):
        raise SimError(422, "`dimensions` should be smaller than the maximum embedding "
                       "dimension.", kind="Validation")
    texts = [f"{prompt}: {text}" if prompt else text for text in inputs]
    vectors: list[list[float]] = []
    for text in texts:
        unit = vector(text, dimensions)
        scale = 1.0 if normalize else 2.0 + len(text) % 5
        vectors.append([x * scale for x in unit])
    tokens = sum(content.count_tokens(text) for text in texts)
    if await delay(sim, req, knobs, prompt=tokens, completion=0, finish="stop"):
        await send_json(req.send, 200, orjson.dumps(vectors),
                        [(b"x-compute-tokens", str(tokens).encode())])
