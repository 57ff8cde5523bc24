#!/usr/bin/env bash
# Create .venv and install StructCore Registry with its test tools.
# torch is pinned first to the CPU build: a bare `torch` requirement may pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
# runtime/'s structcore_runtime (the torch-free maps, scores, kNN, routing, regions) is installed
# as part of the project (pyproject's packages.find); `pip install ./runtime` is the line-PC install.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev,dinov2,ray,serve,deploy]"
echo "installed: $(.venv/bin/registry --version 2>/dev/null || echo 'registry (see .venv/bin/registry)')"
