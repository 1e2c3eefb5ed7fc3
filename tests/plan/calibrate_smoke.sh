#!/usr/bin/env bash
# plan/calibrate.py --quick writes a cluster description that nibble-plan loads, and `nibble-plan predict`
# answers for a given layout on it (rates from --quick are rough: only that the pieces fit is checked).
#   calibrate_smoke.sh <python> <build dir> <source dir>
set -euo pipefail
python=$1 build=$2 src=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PYTHONPATH="$build/python_package" OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_pml=ob1
"$python" "$src/plan/calibrate.py" --quick --out "$work/cpu.toml" > "$work/calibrate.log" || {
  cat "$work/calibrate.log"; exit 1; }
"$build/nibble-plan" --cluster "$work/cpu.toml" --config "$src/examples/configs/tiny.toml" predict --tp 2 --dp 2 \
  > "$work/predict.json"
"$python" - "$work/cpu.toml" "$work/predict.json" <<'PY'
import json, sys, tomllib
cluster = tomllib.load(open(sys.argv[1], "rb"))
p = json.load(open(sys.argv[2]))
assert cluster["cuda_sm"] == 0 and cluster["cores_per_node"] > 0, cluster
assert all(cluster["dense_tflops"][f] > 0 for f in ("bf16", "fp8", "mxfp8", "nvfp4", "mxfp4")), cluster
assert cluster["intra_node"]["bandwidth_gbps"] > 0, cluster
assert cluster["cpu"]["attention_tflops"] > 0, cluster
assert all(cluster["cpu"]["elementwise_gbps"][f] > 0 for f in ("bf16", "fp8", "mxfp8", "nvfp4", "mxfp4")), cluster
assert all(cluster["cpu"]["layer_remainder_ns_per_token"][f] >= 0 for f in ("bf16", "fp8", "mxfp8", "nvfp4", "mxfp4")), cluster
assert "layer_remainder" in p["ms"], p
assert (p["tp"], p["dp"], p["cluster"]) == (2, 2, cluster["name"]), p
assert p["ms_per_step"] > 0 and p["ms"]["tp_comm"] > 0 and p["ms"]["dp_comm"] >= 0, p
print("calibrated description loads; predict:", p["ms_per_step"], "ms")
PY
