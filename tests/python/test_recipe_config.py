"""Recipes from the config (issue 18 item 3): model.layer_recipes and model.recipe_overrides in nibble-train,
checked against runs the old keys already express, bit for bit, and recorded in the checkpoint."""
import json

from test_train_cli import losses, run, tiny_args, tokens  # noqa: F401

STEPS = dict(train__steps=6, train__sample_tokens=0, train__eval_batches=1)


def train(tokens, out, **overrides):
    r = run(tiny_args(tokens, out, **STEPS, **overrides))
    assert r.returncode == 0, r.stdout + r.stderr
    return r, losses(out)


def test_layer_list_equals_bf16_first(tokens, tmp_path):
    """"bf16,nvfp4" is the same model as nvfp4 with bf16_first = 1: the same losses, bit for bit."""
    _, listed = train(tokens, tmp_path / "list", model__layer_recipes="bf16,nvfp4")
    _, first = train(tokens, tmp_path / "first", model__recipe="nvfp4", model__bf16_first=1)
    assert listed == first


def test_overrides_that_unquantize_everything_match_bf16(tokens, tmp_path):
    """fp8_current with every operand kept in BF16 computes what the bf16 recipe computes -- BF16-rounded operands,
    FP32 sums -- through another GEMM kernel (so the sums' order differs): per-step losses within 1e-4 of bf16's,
    while fp8_current itself is an order of magnitude further off. And an override that is a real change (nvfp4's gradient rounding)
    changes the run."""
    r, off = train(tokens, tmp_path / "off", model__recipe="fp8_current",
                   model__recipe_overrides="x.quantized=false,w.quantized=false,dy.quantized=false")
    assert "recipes per layer: fp8_current+overrides, fp8_current+overrides" in r.stdout, r.stdout
    _, bf16 = train(tokens, tmp_path / "bf16", model__recipe="bf16")
    _, fp8 = train(tokens, tmp_path / "fp8", model__recipe="fp8_current")
    gap = max(abs(off[s] - bf16[s]) / bf16[s] for s in bf16)
    fp8_gap = max(abs(fp8[s] - bf16[s]) / bf16[s] for s in bf16)
    assert gap < 1e-4 and fp8_gap > 10 * gap, (gap, fp8_gap)  # (seen: 3.1e-5 and 5.3e-4)
    _, nvfp4 = train(tokens, tmp_path / "nvfp4", model__recipe="nvfp4")
    _, nearest = train(tokens, tmp_path / "nearest", model__recipe="nvfp4", model__recipe_overrides="dy.rounding=nearest")
    assert nearest != nvfp4


def test_recorded_in_the_checkpoint_and_resumed(tokens, tmp_path):
    out = tmp_path / "run"
    args = dict(model__recipe="nvfp4", model__recipe_overrides="w.scaling_2d=false", checkpoint__every=3)
    train(tokens, out, **args)
    manifest = json.loads((out / "checkpoints" / "step_00000006" / "manifest.json").read_text())
    assert manifest["config"]["model.recipe_overrides"] == "w.scaling_2d=false"
    assert manifest["config"]["model.layer_recipes"] == ""
    r = run(tiny_args(tokens, out, **dict(STEPS, train__steps=7), **args) + ["--resume"])
    assert r.returncode == 0 and "at step 6" in r.stdout, r.stdout + r.stderr


def test_layer_list_and_bf16_first_together_are_refused(tokens, tmp_path):
    r = run(tiny_args(tokens, tmp_path, **STEPS, model__layer_recipes="nvfp4,nvfp4", model__bf16_first=1))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "a per-layer list replaces model.bf16_first / bf16_last" in r.stderr, r.stderr


def test_overrides_with_nothing_quantized_are_refused(tokens, tmp_path):
    r = run(tiny_args(tokens, tmp_path, **STEPS, model__recipe="bf16", model__recipe_overrides="dy.rounding=nearest"))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no transformer layer has a quantized recipe to apply them to (model.recipe = \"bf16\")" in r.stderr
