"""plan/calibrate.py's element-wise rates are over the bytes nibble-plan itself counts (issue 20 item 3).

`cpu.elementwise_gbps.<slot>` is a layer's norms, SwiGLU and residual adds, measured, over the bytes the planner's
step model charges that work on a calibrated CPU; the planner then charges those bytes at that rate, so at the
calibrated shape its term is the time measured. The count lives in C++ only (plan/step_time.h
calibrated_elementwise_bytes, `nibble-plan elementwise-bytes`); calibrate.py asks the binary for it instead of
restating plan/activations.cpp in Python. Here: the binary's count against a hand-computed one, calibrate.py's
against the binary's, the step model's (`predict`'s elementwise_bytes_per_layer) against both, and the rate
calibrate.py reports over exactly that count.

nibble-plan is not in the pip package: CTest passes the build tree's as NIBBLE_PLAN (tests/CMakeLists.txt)."""
import json
import os
import shutil
import subprocess

import pytest

from plan_calibrate import load_calibrate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLAN = os.environ.get("NIBBLE_PLAN") or shutil.which("nibble-plan") or os.path.join(ROOT, "build", "nibble-plan")
CALIBRATED = os.path.join(ROOT, "plan", "clusters", "this_machine.toml")  # has [cpu.elementwise_gbps]
pytestmark = pytest.mark.skipif(not os.path.isfile(PLAN), reason=f"{PLAN} not built (set NIBBLE_PLAN)")

# calibrate.py's format slots and the recipe measuring each.
RECIPES = ["bf16", "fp8_current", "mxfp8", "nvfp4", "mxfp4"]


calibrate = load_calibrate()


def hand_count(micro, seq, hidden, heads, ffn):
    """plan/activations.cpp for nibble's layer (SwiGLU, flash attention, no dropout, kv_heads = heads) at
    tp = cp = 1 in the bf16 recipe, per micro-batch: FP32 hidden states (4 bytes), BF16 Linear inputs (2)."""
    act, lin, f_h = 4, 2, ffn / hidden
    replicated = 2 * act + 3 * lin  # both norms' inputs; QKV, gate, up inputs (the norms' outputs)
    inside = (3 * act + act) + lin + 2 * f_h * act + f_h * lin  # Q, K, V + SDPA's output; out-proj in; gate, up; down in
    saved = micro * seq * hidden * (replicated + inside)
    return 2 * saved, 4 * saved  # forward: written and read once; backward twice that


# (micro_batch, seq, hidden, heads, ffn): calibrate.py --quick's model, and the benchmark's (its default).
MODELS = {"quick": (2, 32, 64, 4, 128), "benchmark": (4, 128, 256, 4, 688)}
# The same, worked out once by hand: quick 64 x 64 x (14 + 38) = 212992 saved bytes; benchmark
# 512 x 256 x (14 + 44.875) = 7716864; six times that forward + backward.
HAND = {"quick": 1277952, "benchmark": 46301184}


def model_dict(name):
    micro, seq, hidden, heads, ffn = MODELS[name]
    return {"micro": micro, "seq": seq, "hidden": hidden, "heads": heads, "ffn": ffn}


def plan_json(*args):
    r = subprocess.run([PLAN, *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def model_flags(name, recipe):
    micro, seq, hidden, heads, ffn = MODELS[name]
    return ["--hidden", str(hidden), "--heads", str(heads), "--kv-heads", str(heads), "--ffn", str(ffn),
            "--seq-len", str(seq), "--micro-batch", str(micro), "--global-batch", str(micro), "--recipe", recipe]


@pytest.mark.parametrize("name", MODELS)
def test_the_planners_count_is_the_hand_computed_one(name):
    forward, backward = hand_count(*MODELS[name])
    assert forward + backward == HAND[name]
    for recipe in RECIPES:  # one count for every recipe: its extra work is in its slot's rate
        j = plan_json(*model_flags(name, recipe), "elementwise-bytes")
        assert (j["recipe"], j["forward"], j["backward"], j["total"]) == (recipe, forward, backward, HAND[name]), j


@pytest.mark.parametrize("name", MODELS)
def test_calibrate_asks_the_planner(name):
    for recipe in RECIPES:
        assert calibrate.planner_elementwise_bytes(PLAN, model_dict(name), recipe) == HAND[name]


@pytest.mark.parametrize("recipe", RECIPES)
def test_the_step_model_charges_what_calibrate_divides_by(recipe):
    # On a calibrated description predict's per-layer element-wise bytes are the calibration's, for every recipe.
    j = plan_json("--cluster", CALIBRATED, "--layers", "2", "--vocab", "256", *model_flags("quick", recipe),
                  "predict")
    charged = j["elementwise_bytes_per_layer"]
    assert charged["forward"] + charged["backward"] == calibrate.planner_elementwise_bytes(
        PLAN, model_dict("quick"), recipe) == HAND["quick"], j
    # On a GPU (no measured element-wise rate) a recipe is charged its own saved bytes at the memory bandwidth:
    # bf16's are the same count, COAT's compressed ones fewer.
    gpu = plan_json("--cluster", "h100", "--layers", "2", "--vocab", "256", *model_flags("quick", recipe),
                    "predict")["elementwise_bytes_per_layer"]
    if recipe == "bf16":
        assert gpu == charged
    else:
        assert gpu["forward"] + gpu["backward"] < HAND["quick"], gpu


def test_the_rate_is_over_the_planners_bytes(monkeypatch):
    pytest.importorskip("nibble")
    seconds = 0.004

    def median(step, repeats):
        step()  # the measured work runs; the time is fixed so the rate is known
        return seconds

    monkeypatch.setattr(calibrate, "median_seconds", median)
    m = model_dict("quick")
    for recipe in ("bf16", "nvfp4"):
        layer_bytes = calibrate.planner_elementwise_bytes(PLAN, m, recipe)
        assert calibrate.block_elementwise_gbps(m, 1, recipe, layer_bytes) == pytest.approx(
            HAND["quick"] / seconds / 1e9, rel=1e-15)


def test_an_unknown_recipe_is_refused():
    r = subprocess.run([PLAN, *model_flags("quick", "bogus"), "elementwise-bytes"], capture_output=True, text=True)
    assert r.returncode != 0 and "unknown recipe 'bogus'" in r.stderr


def test_calibrate_counts_nothing_itself(tmp_path):
    # A stand-in nibble-plan answering an odd count: calibrate.py reports what the binary says, for the model it
    # was given, and nothing it could have worked out on its own.
    fake = tmp_path / "nibble-plan"
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\necho \'{{"total": 12345.5}}\'\n')
    fake.chmod(0o755)
    assert calibrate.planner_elementwise_bytes(str(fake), model_dict("benchmark"), "mxfp8") == 12345.5
    assert (tmp_path / "args").read_text().split() == [*model_flags("benchmark", "mxfp8"), "elementwise-bytes"]
    assert calibrate.find_plan(str(fake)) == str(fake)
    with pytest.raises(SystemExit, match="no nibble-plan binary"):
        calibrate.find_plan(str(tmp_path / "missing"))
