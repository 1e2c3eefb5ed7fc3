#!/usr/bin/env bash
# Every test: set-up, build (CPU and CUDA sources; warnings are errors), then CTest runs the GoogleTest
# suites, the multi-rank tests and pytest. GPU-only tests report "skipped" on a machine without a GPU. Then the
# torch-free suites under the sanitizers, and a few seconds of each fuzz target.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/build.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_pml=ob1
ctest --preset default -j 2 "$@"
# The torch-free C++ suites again under AddressSanitizer + UBSan (scripts/sanitize.sh; the full run, every suite
# and a multi-rank nibble-train job, takes ~25 minutes to build on 2 cores and is run by hand: docs/RELIABILITY.md).
bash scripts/sanitize.sh --quick
# A smoke run of every fuzz target (scripts/fuzz.sh; the long runs are recorded in docs/RELIABILITY.md).
bash scripts/fuzz.sh 10
