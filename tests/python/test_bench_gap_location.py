"""benchmarks/bench_gap_location.py (docs/ADAPTIVE.md): the oracle runs it plans and the figures it reads back, on
hand-made records (no training: the benchmark takes half an hour a recipe)."""
import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def gap():
    spec = importlib.util.spec_from_file_location("bench_gap_location",
                                                  os.path.join(ROOT, "benchmarks", "bench_gap_location.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def value(args, key):
    return args[args.index(key) + 1]


def test_plan_moves_one_block_or_one_operand_to_bf16(gap):
    plan = gap.plan("nvfp4", 4, ["16.8"], ["0.05"])
    assert value(plan["block 2 in bf16"], "--model.layer_recipes") == "nvfp4,nvfp4,bf16,nvfp4"
    # A BF16 wgrad operand is never rotated, so on nvfp4 its partner drops the RHT (Recipe::validate insists).
    assert value(plan["x in bf16 (every block)"], "--model.recipe_overrides") == "x.quantized=false,dy_col.rht=false"
    assert value(plan["dy in bf16 (every block)"], "--model.recipe_overrides") == "dy.quantized=false,x_col.rht=false"
    assert value(plan["w in bf16 (every block)"], "--model.recipe_overrides") == "w.quantized=false"
    mxfp4 = gap.plan("mxfp4", 4, [], [])
    assert value(mxfp4["x in bf16 (every block)"], "--model.recipe_overrides") == "x.quantized=false"
    adaptive = plan["adaptive, < 16.8 dB"]
    assert value(adaptive, "--model.precision_policy") == "adaptive"
    assert value(adaptive, "--model.adaptive_snr_db") == "16.8"
    assert "--model.adaptive_measure" not in adaptive
    probe = plan["adaptive, loss probe >= 0.05%"]
    assert value(probe, "--model.adaptive_measure") == "loss_probe"
    assert value(probe, "--model.adaptive_probe_gain") == "0.05"
    assert value(probe, "--model.adaptive_ladder") == value(adaptive, "--model.adaptive_ladder") == "mxfp8, bf16"
    assert value(plan["adaptive, loss probe >= 0.05%, ladder bf16"], "--model.adaptive_ladder") == "bf16"
    assert value(plan["adaptive, loss probe >= 0.05%, every 15 steps"], "--train.stats_every") == "15"
    # Every run quantizes every block unless it names its exception; statistics only where they are read.
    for name, args in plan.items():
        assert value(args, "--model.bf16_first") == "0" and value(args, "--model.bf16_last") == "0", name
    assert "--train.stats_every" in plan["nvfp4 (fixed)"] and "--train.stats_every" not in plan["block 0 in bf16"]


def test_block_snr_is_the_worst_copy_averaged_over_the_second_half(gap, tmp_path):
    def record(step, layer, snrs):
        return {"step": step, "layer": layer, "recipe": "nvfp4",
                "operands": {role: {"snr_db": v} for role, v in snrs.items()}}
    records = [
        record(45, "layers.0.qkv", {"x_row": 1.0, "dy_col": 0.0}),     # first half: not counted
        record(90, "layers.0.qkv", {"x_row": 20.0, "dy_col": 17.0}),
        record(90, "layers.0.up", {"x_row": 20.0, "dy_col": 16.0, "w_row": None}),  # null: equal to its source
        record(135, "layers.0.qkv", {"x_row": 20.0, "dy_col": 18.0}),
        record(90, "layers.1.qkv", {"x_row": 15.0, "dy_col": 19.0}),
        record(135, "layers.1.qkv", {"x_row": 14.0}),
    ]
    (tmp_path / "stats.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    # steps 45, 90, 135: the second half is 90 and 135.
    assert gap.block_snr(str(tmp_path)) == pytest.approx({"layers.0": (17.0 + 16.0 + 18.0) / 3,
                                                          "layers.1": (15.0 + 14.0) / 2})


def test_precision_at_end_names_the_raised_linears(gap, tmp_path):
    records = [{"step": 90, "precision_switch": {"linear": "layers.1.up", "from": "nvfp4", "to": "mxfp8"}},
               {"step": 180, "precision_switch": {"linear": "layers.0.gate", "from": "nvfp4", "to": "mxfp8"}},
               {"step": 270, "precision_switch": {"linear": "layers.1.up", "from": "mxfp8", "to": "bf16"}},
               {"step": 900, "precision": {"four_bit": 18, "linears": 21, "four_bit_weight_share": 0.824}}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert gap.precision_at_end(str(tmp_path)) == ("18 of 21 in 4 bits (82% of weights)",
                                                   ["layers.0.gate", "layers.1.up"])
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 900, "final": True, "eval_loss": 3.4}) + "\n")
    assert gap.precision_at_end(str(tmp_path)) == ("", [])


def test_block_switches_lists_each_block_once_per_switch(gap, tmp_path):
    records = [{"step": 270, "precision_switch": {"linear": f"layers.0.{n}", "from": "nvfp4", "to": "mxfp8"}}
               for n in ("qkv", "out", "gate")]
    records += [{"step": 630, "precision_switch": {"linear": "layers.0.qkv", "from": "mxfp8", "to": "bf16"}},
                {"step": 765, "precision_switch": {"linear": "layers.3.up", "from": "nvfp4", "to": "mxfp8"}}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert gap.block_switches(str(tmp_path)) == ("layers.0 -> mxfp8 after step 270, layers.0 -> bf16 after step 630, "
                                                 "layers.3 -> mxfp8 after step 765")
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 900, "final": True, "eval_loss": 3.4}) + "\n")
    assert gap.block_switches(str(tmp_path)) == "none"
