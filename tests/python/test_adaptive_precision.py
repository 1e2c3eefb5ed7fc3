"""Adaptive precision (issue 18 item 4): model.precision_policy = "adaptive" in nibble-train raises a Linear one rung
along its ladder after adaptive_patience statistics measurements below adaptive_snr_db, or at once on a non-finite
weight gradient; every rank switches at the same step boundary; the rungs resume exactly from a checkpoint.

The threshold here (35 dB) is above what NVFP4 (~17-20 dB) and MXFP8 (~26-32 dB) copies reach on any data, so the
switch steps follow from the config alone: layer 0 starts at mxfp8 (ladder mxfp8 -> bf16), layer 1 at nvfp4
(nvfp4 -> mxfp8 -> bf16), statistics on steps 2, 4, 6, ..., patience 2: layer 0 and layer 1 go up after step 4,
layer 1 again after step 8. The LM head is bf16 (tiny.toml), already on its top rung."""
import json
import os

from test_train_cli import losses, run, tiny_args, tokens  # noqa: F401

ADAPTIVE = dict(model__layer_recipes="mxfp8,nvfp4", model__precision_policy="adaptive", model__adaptive_snr_db=35,
                model__adaptive_patience=2, train__stats_every=2, train__steps=10, train__sample_tokens=0,
                train__eval_batches=1)
LINEARS = ("qkv", "out", "gate", "up", "down")


def train(tokens, out, np=0, extra=(), **overrides):
    r = run(tiny_args(tokens, out, **dict(ADAPTIVE, **overrides)) + list(extra), np=np)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def records(out, key):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [rec for rec in map(json.loads, f) if key in rec]


def switches(out):
    return [(rec["step"], rec["precision_switch"]["linear"], rec["precision_switch"]["from"],
             rec["precision_switch"]["to"]) for rec in records(out, "precision_switch")]


def expected_switches():
    return sorted([(4, f"layers.0.{l}", "mxfp8", "bf16") for l in LINEARS] +
                  [(4, f"layers.1.{l}", "nvfp4", "mxfp8") for l in LINEARS] +
                  [(8, f"layers.1.{l}", "mxfp8", "bf16") for l in LINEARS])


def test_switches_at_the_step_boundary_logged_and_measured_in_the_new_recipe(tokens, tmp_path):
    r = train(tokens, tmp_path / "adaptive")
    assert sorted(switches(tmp_path / "adaptive")) == expected_switches()
    for rec in records(tmp_path / "adaptive", "precision_switch"):
        assert "< 35.00 dB in 2 measurement(s) in a row" in rec["precision_switch"]["reason"], rec
    assert "precision: after step 4, layers.1.qkv nvfp4 -> mxfp8 (worst SNR < 35.00 dB in 2 measurement(s)" in r.stdout, \
        r.stdout
    assert "precision at the end: 0 of 11 Linears in 4 bits" in r.stdout, r.stdout
    final = records(tmp_path / "adaptive", "precision")[-1]["precision"]
    assert final["four_bit"] == 0 and final["recipes"]["layers.1.up"] == "bf16" and final["recipes"]["lm_head"] == "bf16"
    # stats.jsonl names the recipe each step measured: layer 1 in nvfp4 up to step 4, mxfp8 on steps 6 and 8.
    with open(tmp_path / "adaptive" / "stats.jsonl") as f:
        layer1 = {rec["step"]: rec["recipe"] for rec in map(json.loads, f) if rec.get("layer") == "layers.1.up"}
    assert layer1 == {2: "nvfp4", 4: "nvfp4", 6: "mxfp8", 8: "mxfp8"}, layer1
    # Up to the first switch the run is the fixed-policy run; the step after it is not.
    fixed = train(tokens, tmp_path / "fixed", model__precision_policy="fixed")
    assert "precision" not in fixed.stdout
    a, f = losses(tmp_path / "adaptive"), losses(tmp_path / "fixed")
    assert all(a[s] == f[s] for s in range(1, 5)) and a[5] != f[5], (a, f)


def test_resume_continues_bit_identically(tokens, tmp_path):
    """10 steps with checkpoints at 6 and 10; a new job resuming from step 6 repeats steps 7-10 bit for bit: the
    step-4 switch is in the checkpoint, and layer 1's count at step 6 (one measurement below, on mxfp8) must come
    back for its step-8 switch, which happens after the resume."""
    import shutil
    a, b = tmp_path / "a", tmp_path / "b"
    train(tokens, a, checkpoint__every=6)
    shutil.copytree(a / "checkpoints" / "step_00000006", b / "checkpoints" / "step_00000006")
    (b / "checkpoints" / "latest").write_text("step_00000006\n")
    r = train(tokens, b, checkpoint__every=6, extra=["--resume"])
    assert "at step 6" in r.stdout and "precision policy: resumed with 10 of 11 Linears raised" in r.stdout, r.stdout
    full, resumed = losses(a), losses(b)
    assert sorted(resumed) == [7, 8, 9, 10]
    assert all(resumed[s] == full[s] for s in resumed), (full, resumed)
    assert switches(b) == [s for s in switches(a) if s[0] > 6] == [(8, f"layers.1.{l}", "mxfp8", "bf16") for l in LINEARS]


def test_rungs_survive_a_resharded_resume(tokens, tmp_path):
    """A checkpoint written at pp = 2 resumed on one rank (launch/checkpoint_reshard.cpp carries the rungs): steps
    7-10, the step-8 switch included, as the pp = 2 run did them."""
    import shutil
    a, b = tmp_path / "a", tmp_path / "b"
    train(tokens, a, np=2, checkpoint__every=6, parallel__pp=2)
    shutil.copytree(a / "checkpoints" / "step_00000006", b / "checkpoints" / "step_00000006")
    (b / "checkpoints" / "latest").write_text("step_00000006\n")
    r = train(tokens, b, checkpoint__every=6, extra=["--resume"])
    assert "resharded" in r.stdout and "precision policy: resumed with 10 of 11 Linears raised" in r.stdout, r.stdout
    full, resumed = losses(a), losses(b)
    assert all(resumed[s] == full[s] for s in (7, 8, 9, 10)), (full, resumed)
    assert switches(b) == [s for s in switches(a) if s[0] > 6]


def test_a_changed_ladder_refuses_the_recorded_rungs(tokens, tmp_path):
    train(tokens, tmp_path, train__steps=6)
    r = run(tiny_args(tokens, tmp_path, **dict(ADAPTIVE, model__adaptive_ladder="fp8_current, bf16")) + ["--resume"])
    assert r.returncode != 0
    assert "layers.1.qkv on rung 1 (mxfp8), which is not that rung of its ladder in this job" in r.stderr, r.stderr


def test_every_rank_switches_at_the_same_step(tokens, tmp_path):
    """pp = 2 holds layer 0 on rank 0 and layer 1 on rank 1; tp = 2 (reproducible sums) splits every Linear over
    both ranks; dp = 2 gives each rank half of the step's tokens (its statistics are half of the reduced sums).
    Each reproduces the one-rank run's losses bit for bit only if both ranks switched the same Linears after the
    same step (a rank still on the old recipe computes other products), and logs the same switches."""
    for name, np, layout in [("pp2", 2, dict(parallel__pp=2)),
                             ("tp2", 2, dict(parallel__tp=2, parallel__reproducible_sums="true")),
                             ("dp2", 2, dict(parallel__dp=2))]:
        one = dict(parallel__reproducible_sums="true") if name == "tp2" else {}
        train(tokens, tmp_path / (name + "_one"), **one)
        train(tokens, tmp_path / name, np=np, **layout)
        assert sorted(switches(tmp_path / name)) == expected_switches(), name
        assert switches(tmp_path / name) == switches(tmp_path / (name + "_one")), name
        assert losses(tmp_path / name) == losses(tmp_path / (name + "_one")), name


def test_a_non_finite_gradient_raises_its_linear(tokens, tmp_path):
    """A NaN in layers.0.up's gradient on step 3 (the test-only fault hook): the step is skipped and layers.0.up,
    only it, goes up one rung after it. The SNR rule is off (a threshold no figure is below)."""
    env = dict(os.environ, NIBBLE_FAULT="nan_grad:layers.0.up.weight:3:1")
    import subprocess
    from test_train_cli import BINARY, ENV
    args = tiny_args(tokens, tmp_path, **dict(ADAPTIVE, model__layer_recipes="nvfp4,nvfp4",
                                              model__adaptive_snr_db=-100, train__steps=5))
    r = subprocess.run([BINARY] + args, capture_output=True, text=True, env=dict(ENV, **env), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert switches(tmp_path) == [(3, "layers.0.up", "nvfp4", "mxfp8")]
    assert records(tmp_path, "precision_switch")[0]["precision_switch"]["reason"] == "non-finite weight gradient"
    assert [rec["step"] for rec in records(tmp_path, "skipped") if rec["skipped"]] == [3]


def test_adaptive_needs_statistics(tokens, tmp_path):
    r = run(tiny_args(tokens, tmp_path, **dict(ADAPTIVE, train__stats_every=0)))
    assert r.returncode == 2, r.stdout + r.stderr
    assert ("train.stats_every = 0 is invalid: must be > 0 with model.precision_policy = \"adaptive\"" in r.stderr), \
        r.stderr
