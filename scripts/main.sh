#!/usr/bin/env bash
# The main job: set-up, build, install (pip, into .venv), then the installed `nibble-train` on the text corpus
# (data/kjv.txt): a small Llama-style byte-level GPT in the NVFP4 recipe (examples/configs/default.toml), 2 data-parallel ranks under
# mpirun, printing a progress line per step, the held-out loss and a generated sample at the end.
# Extra arguments are config overrides, e.g. --model.recipe mxfp8 --train.steps 500.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/build.sh
if [[ ! -f data/tokens/train.bin || data/kjv.txt -nt data/tokens/train.bin ]]; then
  .venv/bin/nibble-train prepare --input data/kjv.txt --out data/tokens
fi
export OMPI_MCA_pml=ob1 OMPI_MCA_mpi_yield_when_idle=1 OMP_NUM_THREADS=1
if [[ "$(id -u)" == 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
mpirun -np 2 --oversubscribe --bind-to none .venv/bin/nibble-train --config examples/configs/default.toml "$@"
