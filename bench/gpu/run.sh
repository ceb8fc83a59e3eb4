#!/usr/bin/env bash
# The GPU machine's one call: install the carried wheels (no network there), then the bench.
# Here, first: bash bench/gpu/fetch_wheels.sh; then run this with bench/gpu/wheels carried.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -m pip install --quiet --no-deps --no-index bench/gpu/wheels/*.whl
python3 bench/gpu/bench.py "$@"
