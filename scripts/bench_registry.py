"""Run the registry bench (issue 6): ``python scripts/bench_registry.py [--quick] [--json] ...``.

Same options as ``python -m registry.bench`` (see :func:`registry.bench.main`).
"""

from __future__ import annotations

import sys

from registry.bench import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
