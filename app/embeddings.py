"""Embedding vectors on the wire: OpenAI's ``float`` lists, or ``base64`` of little-endian
float32."""

from __future__ import annotations

import base64
import sys
from array import array
from collections.abc import Sequence


def encode_vector(vector: Sequence[float], encoding_format: str) -> list[float] | str:
    """``vector`` as OpenAI sends it for ``encoding_format``."""
    if encoding_format != "base64":
        return list(vector)
    packed = array("f", vector)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def decode_vector(encoded: str) -> list[float]:
    """The inverse of ``encode_vector(..., "base64")``."""
    packed = array("f")
    packed.frombytes(base64.b64decode(encoded))
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tolist()
