#!/usr/bin/env bash
# Every test: set-up, build (CPU and CUDA sources; warnings are errors), then CTest runs the GoogleTest
# suites, the multi-rank tests and pytest. GPU-only tests report "skipped" on a machine without a GPU.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/build.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_pml=ob1
ctest --preset default -j 2 "$@"
