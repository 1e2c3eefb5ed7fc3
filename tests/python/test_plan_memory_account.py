"""nibble-plan's memory model against nibble-train's measured memory account (issue 20's Tests: "memory model
against nibble's own measured memory account"; the account is launch/memory_account.h, issue 17 item 3).

For a few tiny layouts nibble-train runs two steps and writes {"step": 2, "memory": {...}} to metrics.jsonl;
`nibble-plan predict` gives the same layout's categories in bytes ("memory", plan/predict.h). Per rank:
- parameters and gradients: equal (FP32 parameters are nibble's master weights; the norm vectors count);
- optimizer states: equal (per tensor at optim::moment_layout's size, so FP8's partial groups and int8's FP32
  states for tensors under 4096 elements count, plus one int64 step per tensor); under ZeRO-1 within 0.2%: the
  plan divides each tensor's states by dp x cp, nibble cuts the flat parameter range at 256-element boundaries
  (a cut tensor's piece keeps its own partial codec groups and step count);
- weight caches and saved_per_microbatch (what nibble's autograd functions save over one micro-batch: Linear
  inputs in the recipe's columnwise format, compressed norm/SwiGLU inputs, FP32 where kept as is): equal up to
  exactly 4 bytes per quantized copy, the FP32 per-tensor value every QuantizedCopyTensor carries
  (core/quantized_tensor.cpp), which the plan's per-element size (measured on a 4096 x 4096 tile) leaves out.
The attention kernel's Q, K, V (torch's SDPA) are in the plan's activations but not metered, so not compared.

nibble-plan is not in the pip package: CTest passes the build tree's as NIBBLE_PLAN (tests/CMakeLists.txt);
otherwise it is the one beside the nibble-train under test, or on PATH."""
import json
import os
import shutil
import subprocess

import pytest

from test_train_cli import BINARY, ROOT, TINY, needs_mpirun, run, tiny_args, tokens  # noqa: F401


def _nibble_plan() -> str:
    if os.environ.get("NIBBLE_PLAN"):
        return os.environ["NIBBLE_PLAN"]
    beside = os.path.join(os.path.dirname(BINARY), "nibble-plan")
    if os.path.isfile(beside):
        return beside
    return shutil.which("nibble-plan") or beside


PLAN = _nibble_plan()
CLUSTER = os.path.join(ROOT, "plan", "clusters", "this_machine.toml")
pytestmark = [pytest.mark.skipif(not os.path.isfile(BINARY), reason=f"{BINARY} not built"),
              pytest.mark.skipif(not os.path.isfile(PLAN), reason=f"{PLAN} not built")]

LAYERS = 2  # tiny.toml: 2 layers of 5 Linears (QKV, out, gate, up, down)
# Quantized recipes: each Linear caches its weight's row- and columnwise copies, and a micro-batch's forward
# saves each Linear's input (columnwise) plus, compressed, both norms' inputs and SwiGLU's two inputs.
WEIGHT_COPIES = 2 * 5 * LAYERS
SAVED_COPIES = (5 + 4) * LAYERS

# (ranks, recipe, optim.state, tp, dp, zero, tied)
CASES = [
    pytest.param((0, "bf16", "fp32", 1, 1, 0, False), id="bf16-fp32"),
    pytest.param((0, "nvfp4", "fp8", 1, 1, 0, False), id="nvfp4-fp8"),
    pytest.param((0, "mxfp8", "fp8_plain", 1, 1, 0, True), id="mxfp8-fp8plain-tied"),
    pytest.param((2, "nvfp4", "int8", 2, 1, 0, False), id="nvfp4-int8-tp2", marks=needs_mpirun),
    pytest.param((2, "nvfp4", "fp8", 1, 2, 1, False), id="nvfp4-fp8-dp2-zero1", marks=needs_mpirun),
]


def measured(tokens, out, ranks, recipe, state, tp, dp, zero, tied):
    r = run(tiny_args(tokens, out, train__steps=2, optim__warmup=0, train__sample_tokens=0, train__eval_batches=1,
                      checkpoint__every=0, model__recipe=recipe, optim__state=state, parallel__tp=tp,
                      parallel__dp=dp, optim__zero=zero, model__tie_embeddings=str(tied).lower()), np=ranks)
    assert r.returncode == 0, r.stdout + r.stderr
    with open(out / "metrics.jsonl") as f:
        (memory,) = [rec["memory"] for rec in map(json.loads, f) if "memory" in rec]
    return memory


def planned(recipe, state, tp, dp, zero, tied):
    cmd = [PLAN, "--cluster", CLUSTER, "--config", TINY, "--recipe", recipe, "--state", state, "--zero", str(zero),
           "--tied", str(tied).lower(), "predict", "--tp", str(tp), "--dp", str(dp)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["memory"]


@pytest.mark.parametrize("case", CASES)
def test_plan_matches_the_measured_account(tokens, tmp_path, case):
    ranks, recipe, state, tp, dp, zero, tied = case
    m = measured(tokens, tmp_path / "run", ranks, recipe, state, tp, dp, zero, tied)
    p = planned(recipe, state, tp, dp, zero, tied)
    assert p["stage"] == 0
    assert m["parameters"] == p["parameters"], (m, p)
    assert m["gradients"] == p["gradients"], (m, p)
    if zero:
        assert abs(m["optimizer_states"] - p["optimizer_states"]) <= 0.002 * p["optimizer_states"], (m, p)
    else:
        assert m["optimizer_states"] == p["optimizer_states"], (m, p)
    quantized = recipe != "bf16"
    assert m["weight_caches"] == p["weight_copies"] + (4 * WEIGHT_COPIES if quantized else 0), (m, p)
    assert m["saved_per_microbatch"] == p["saved_per_microbatch"] + (4 * SAVED_COPIES if quantized else 0), (m, p)
    # The plan's activations hold one micro-batch of every layer (pp = 1): nibble's saves plus the attention
    # kernel's, which the account does not meter; the plan's total is above what the account calls persistent.
    assert p["activations"] + p["logits"] > p["saved_per_microbatch"], p
    assert p["total"] > m["persistent"], (m, p)
