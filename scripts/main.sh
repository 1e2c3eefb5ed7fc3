#!/usr/bin/env bash
# The main job. Until the trainer lands (issue "The main job"), this runs the element-format self-check on
# the installed text corpus and the format-conversion benchmark.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/build.sh
PYTHONPATH="$root/build/python_package" OMP_NUM_THREADS=2 "$root/.venv/bin/python" examples/format_selfcheck.py "$@"
./build/benchmarks/bench_encode --benchmark_min_time=0.2
