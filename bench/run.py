"""Entry point of the benchmark: ``.venv/bin/python bench/run.py [--quick] [--help]``.

Run as a script, this file's folder is first on ``sys.path``; the repository root is put there
so that the ``bench`` package (and ``python -m bench.*`` in the children) resolves.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    """Run ``bench.suite.main`` with the command line's arguments."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from bench.suite import main as suite_main

    return suite_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
