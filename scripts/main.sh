#!/usr/bin/env bash
# The main job: set-up, build, then a short training run on the installed text corpus (data/kjv.txt): a
# byte-level model built from nibble's NVFP4 Linear/RMSNorm/SwiGLU layers, with progress, held-out loss and a
# generated sample at the end. Until the GPT trainer (`nibble-train`, issue "The main job") lands, this
# Python example is the main job. Extra arguments go to the example (e.g. --recipe mxfp8 --steps 500).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/build.sh
PYTHONPATH="$root/build/python_package" OMP_NUM_THREADS=2 "$root/.venv/bin/python" examples/train_char_model.py "$@"
