"""nibble-train at every parallel layout against the single-rank run of the same config (issues 7 and 8):
the per-step loss curves (for pp also the gradient norms) from metrics.jsonl must agree -- bf16 to 1e-4
relative, quantized recipes to 0.5%.

What the numbers are (measured on this machine, 2 cores):
  - dp=2 and pp (GPipe, 1F1B, interleaved) are bit-identical to one rank in bf16: the same operations in the
    same order, only on different ranks.
  - tp=2 splits sums across ranks (row-parallel partial sums, column-parallel dgrads, the vocab-parallel
    log-sum-exp). With parallel.reproducible_sums (FP64 accumulation, core/gemm.h) the split sums are exact and
    round once, and stochastic rounding draws each element's bits by its place in the whole tensor
    (precision::SrIndexMap), so tp=2 is bit-identical to one rank over 30 steps in every preset checked here
    (bf16, fp8_current, mxfp8, nvfp4); with sequence parallelism the norm-weight gradients (sums over each
    rank's tokens) still add in another order: ~1e-5 by step 30.
  - In the default FP32 mode the split sums differ by ~1e-8 at step 1 and the difference grows with training
    (BF16 operand rounding and FP4 rounding flip on it): bf16 ~2e-5 at step 20 and ~1.4e-4 by step 30, nvfp4
    ~5e-4 at step 20 and ~0.5% by step 30 of the tiny model. That mode is checked over 20 steps.
  - dp=2 (one micro-batch per rank) is bit-identical to one rank in every preset but fp8_delayed:
    stochastic-rounding counters restart per micro-batch at a stream keyed by (step, first sample), so a
    micro-batch draws the same bits on any dp rank. fp8_delayed differs (~4e-4 over 20 steps): a dp rank's
    loss is the mean over its own micro-batches, so its output gradients are dp times one rank's, and delayed
    scaling's first-step scale (1, not taken from the tensor) quantizes them to other codes.
  - cp=2 (ring attention's log-sum-exp merge is FP32) differs by ~1e-6 early, ~4e-4 by step 30 in bf16.
  - pp is bit-identical to one rank in the stochastically rounded recipes too: a Linear's backward draws the
    SR counter values its forward reserved, whatever other micro-batches ran in between.
"""
import json
import os
import re

import pytest

from test_train_cli import MPIRUN, losses, run, tiny_args, tokens  # noqa: F401 (tokens is a fixture)

needs_mpirun = pytest.mark.skipif(MPIRUN is None, reason="mpirun (Open MPI) not found")
TOL = {"bf16": 1e-4}
QUANTIZED_TOL = 5e-3

_baselines = {}


class Curve(dict):
    """step -> loss; .grad_norms: step -> the global gradient norm before clipping (every parameter's gradient,
    summed over all ranks' shards), both from metrics.jsonl."""

    def __init__(self, out):
        super().__init__(losses(out))
        self.grad_norms = {}
        with open(os.path.join(out, "metrics.jsonl")) as f:
            for line in f:
                rec = json.loads(line)
                if rec.get("grad_norm") is not None:
                    self.grad_norms[rec["step"]] = rec["grad_norm"]


def curve(tokens, tmp_path_factory, np, recipe, **overrides):
    """The loss curve of one run (np = 0: a single process, no mpirun)."""
    out = tmp_path_factory.mktemp("run")
    r = run(tiny_args(tokens, out, model__recipe=recipe, train__sample_tokens=8, **overrides), np=np)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return Curve(out), r.stdout


def baseline(tokens, tmp_path_factory, recipe, **overrides):
    key = (recipe, tuple(sorted(overrides.items())))
    if key not in _baselines:
        _baselines[key] = curve(tokens, tmp_path_factory, 0, recipe, **overrides)[0]
    return _baselines[key]


def max_rel(a, b, steps):
    assert sorted(a) == sorted(b) == list(range(1, steps + 1)), (sorted(a), sorted(b))
    return max(abs(a[s] - b[s]) / abs(a[s]) for s in a)


def check(ref, got, recipe, steps, what):
    tol = TOL.get(recipe, QUANTIZED_TOL)
    err = max_rel(ref, got, steps)
    assert err <= tol, f"{what} {recipe}: loss curve differs from one rank by {err:.2e} (tolerance {tol:g})"
    return err


# ---- issue 7: tp=2 and dp=2 against one rank, 30 steps, every preset ----
@needs_mpirun
@pytest.mark.parametrize("recipe", ["bf16", "fp8_current", "mxfp8", "nvfp4"])
def test_tp2_and_dp2_match_single_rank(tokens, tmp_path_factory, recipe):
    exact = {"parallel__reproducible_sums": "true"}
    ref = baseline(tokens, tmp_path_factory, recipe, **exact)
    for layout in ({"parallel__dp": 2}, {"parallel__tp": 2}, {"parallel__tp": 2, "parallel__sequence_parallel": "true"}):
        got, _ = curve(tokens, tmp_path_factory, 2, recipe, **exact, **layout)
        check(ref, got, recipe, 30, str(layout))
        if "parallel__sequence_parallel" not in layout:
            # FP64 sums and stochastic rounding keyed by each element's place in the whole tensor (tp), by
            # (step, micro-batch) rather than by rank (dp): the same numbers as one rank.
            assert got == ref, f"{layout} must be bit-identical to one rank ({recipe}): {max_rel(ref, got, 30):.2e}"
    # The default FP32 accumulation: close to one rank over 20 steps (the drift after that: module docstring).
    common = {"train__steps": 20}
    ref32 = baseline(tokens, tmp_path_factory, recipe, **common)
    got32, _ = curve(tokens, tmp_path_factory, 2, recipe, parallel__tp=2, **common)
    check(ref32, got32, recipe, 20, "tp=2, FP32 sums")


@needs_mpirun
def test_quartet_tp2_with_reproducible_sums_is_one_rank(tokens, tmp_path_factory):
    """mxfp4_quartet at tp=2 drifted from one rank (3.9e-4 by step 30) until the QuEST/Quartet Hadamard became
    a per-group FP64 butterfly (a BLAS matmul's FP32 sums change order with a shard's row count) and the tp
    dgrad applied QuEST's mask after the group's FP64 sum instead of to each rank's rounded partial."""
    exact = {"parallel__reproducible_sums": "true"}
    ref = baseline(tokens, tmp_path_factory, "mxfp4_quartet", **exact)
    got, _ = curve(tokens, tmp_path_factory, 2, "mxfp4_quartet", parallel__tp=2, **exact)
    assert got == ref, f"tp=2 mxfp4_quartet: {max_rel(ref, got, 30):.2e} from one rank"


# ---- issue 8: pipeline schedules (bit-identical in bf16) ----
PIPELINES = [
    (2, {"parallel__pp": 2, "parallel__pp_schedule": "1f1b"}, 4),
    (2, {"parallel__pp": 2, "parallel__pp_schedule": "gpipe"}, 4),
    (2, {"parallel__pp": 2, "parallel__pp_schedule": "interleaved", "parallel__virtual_stages": 2}, 4),
    (4, {"parallel__pp": 4, "parallel__pp_schedule": "1f1b"}, 4),
    (4, {"parallel__pp": 4, "parallel__pp_schedule": "interleaved", "parallel__virtual_stages": 2}, 8),
    # Megatron's account_for_loss_in_pipeline_split: the head's stage gets a layer fewer (2 + 1 of 3 layers).
    (2, {"parallel__pp": 2, "parallel__pp_schedule": "1f1b", "parallel__pp_head_as_layer": "true"}, 3),
]


@needs_mpirun
@pytest.mark.parametrize("np,layout,layers", PIPELINES, ids=lambda v: str(v))
def test_pipeline_matches_single_rank(tokens, tmp_path_factory, np, layout, layers):
    common = dict(model__layers=layers, train__steps=20, train__global_batch=8, train__micro_batch=1)
    ref = baseline(tokens, tmp_path_factory, "bf16", **common)
    got, stdout = curve(tokens, tmp_path_factory, np, "bf16", **common, **layout)
    err = max_rel(ref, got, 20)
    assert err <= 1e-5, f"{layout}: {err:.2e}"
    # The gradients too: each step's global gradient norm (all parameters, before clipping) as one rank's.
    err = max_rel(ref.grad_norms, got.grad_norms, 20)
    assert err <= 1e-5, f"{layout}: gradient norms differ from one rank by {err:.2e}"
    if "parallel__pp_head_as_layer" in layout:
        assert "rank 0 holds embedding + layers 0-1)" in stdout, stdout[:2000]
    # The trainer prints the measured bubble beside (p-1)/(v*m). Not compared here (a timing, and on 2 cores
    # 4 ranks time-share): benchmarks/bench_train_bubble.py compares it at pp = 2.
    m = re.search(r"measured bubble ([0-9.]+) = .*?; \(p-1\)/\(v\*m\) = ([0-9.]+)", stdout)
    assert m and float(m.group(1)) >= 0.0, stdout[-2000:]
    p, v = layout["parallel__pp"], layout.get("parallel__virtual_stages", 1)
    assert abs(float(m.group(2)) - (p - 1) / (v * 8)) < 1e-3


# ---- issue 8: context parallel and the 4-rank combinations ----
@needs_mpirun
@pytest.mark.parametrize("np,layout", [
    (2, {"parallel__cp": 2}),
    (2, {"parallel__cp": 2, "parallel__cp_method": "ulysses"}),
    (4, {"parallel__cp": 4, "parallel__cp_method": "ring"}),
    (4, {"parallel__cp": 4, "parallel__cp_method": "ulysses"}),
], ids=lambda v: str(v))
def test_context_parallel_matches_single_rank(tokens, tmp_path_factory, np, layout):
    common = dict(train__steps=20)
    ref = baseline(tokens, tmp_path_factory, "bf16", **common)
    got, _ = curve(tokens, tmp_path_factory, np, "bf16", **common, **layout)
    check(ref, got, "bf16", 20, str(layout))


@needs_mpirun
@pytest.mark.parametrize("recipe", ["bf16", "nvfp4"])
@pytest.mark.parametrize("layout", [{"parallel__tp": 2, "parallel__pp": 2}, {"parallel__cp": 2, "parallel__dp": 2}],
                         ids=lambda v: str(v))
def test_four_rank_layouts_match_single_rank(tokens, tmp_path_factory, recipe, layout):
    common = dict(train__steps=20)
    ref = baseline(tokens, tmp_path_factory, recipe, **common)
    got, _ = curve(tokens, tmp_path_factory, 4, recipe, **common, **layout)
    check(ref, got, recipe, 20, str(layout))


@needs_mpirun
@pytest.mark.parametrize("recipe", ["nvfp4", "mxfp4_quartet"])
def test_pipelines_round_stochastically_as_one_rank(tokens, tmp_path_factory, recipe):
    """Each Linear's backward draws the stochastic-rounding counter values its forward reserved (core/linear.h),
    so 1F1B and interleaved orders (other micro-batches' forwards between a forward and its backward) round every
    gradient as one rank does: bit-identical loss curves; with FP64 sums tp=2 x pp=2 too."""
    common = dict(train__steps=12, model__layers=4, train__micro_batch=2)
    ref = baseline(tokens, tmp_path_factory, recipe, **common)
    for layout in ({"parallel__pp": 2},
                   {"parallel__pp": 2, "parallel__pp_schedule": "interleaved", "parallel__virtual_stages": 2}):
        got, _ = curve(tokens, tmp_path_factory, 2, recipe, **common, **layout)
        assert got == ref, f"{layout} {recipe}: {max_rel(ref, got, 12):.2e} from one rank"
    if recipe == "nvfp4":
        exact = {"parallel__reproducible_sums": "true"}
        ref = baseline(tokens, tmp_path_factory, recipe, **common, **exact)
        got, _ = curve(tokens, tmp_path_factory, 4, recipe, **common, **exact, parallel__tp=2, parallel__pp=2)
        assert got == ref, f"tp=2 pp=2 {recipe}: {max_rel(ref, got, 12):.2e} from one rank"


@needs_mpirun
@pytest.mark.parametrize("np,layout,layers", PIPELINES, ids=lambda v: str(v))
def test_pipeline_losses_are_bit_identical(tokens, tmp_path_factory, np, layout, layers):
    """The bf16 pipelines above, held to equality: every step's loss is one rank's bit for bit (the same
    operations in the same order, on other ranks). The global gradient norm sums the stages' FP64 sums of squares
    in another order than one rank does, so it may differ in its last bits (measured <= 2.2e-16)."""
    common = dict(model__layers=layers, train__steps=20, train__global_batch=8, train__micro_batch=1)
    ref = baseline(tokens, tmp_path_factory, "bf16", **common)
    got, _ = curve(tokens, tmp_path_factory, np, "bf16", **common, **layout)
    assert got == ref, f"{layout}: {max_rel(ref, got, 20):.2e} from one rank"
    assert max_rel(ref.grad_norms, got.grad_norms, 20) <= 1e-12


PRESETS = ["bf16", "fp8_current", "fp8_delayed", "fp8_block", "mxfp8", "nvfp4", "mxfp4", "mxfp4_quartet"]


@needs_mpirun
@pytest.mark.parametrize("recipe", PRESETS)
def test_dp2_and_pp2_in_every_preset(tokens, tmp_path_factory, recipe):
    """dp=2 and pp=2 (1F1B) against one rank in every preset, default FP32 sums, 20 steps of the tiny model.
    pp=2: every loss bit for bit (gradient norms up to the stages' FP64 sum order). dp=2 (one micro-batch per
    rank, so the gradient sums associate as one rank's): losses and gradient norms bit for bit, except
    fp8_delayed: a dp rank runs fewer micro-batches, so its micro-batch losses are scaled by 1/1 instead of one
    rank's 1/2 and its output gradients are twice one rank's; scale-relative quantizers give the same codes for
    that, but delayed scaling's first step quantizes with the initial scale 1, which is absolute: the step-1
    gradients differ (measured: step-1 gradient norm 1e-3 apart, loss curve 4e-4 over 20 steps)."""
    common = dict(train__steps=20)
    ref = baseline(tokens, tmp_path_factory, recipe, **common)
    pp, _ = curve(tokens, tmp_path_factory, 2, recipe, **common, parallel__pp=2)
    assert pp == ref, f"pp=2 {recipe}: {max_rel(ref, pp, 20):.2e} from one rank"
    assert max_rel(ref.grad_norms, pp.grad_norms, 20) <= 1e-12
    dp, _ = curve(tokens, tmp_path_factory, 2, recipe, **common, parallel__dp=2)
    if recipe == "fp8_delayed":
        check(ref, dp, recipe, 20, "dp=2")
    else:
        assert dp == ref, f"dp=2 {recipe}: {max_rel(ref, dp, 20):.2e} from one rank"
        assert dp.grad_norms == ref.grad_norms, f"dp=2 {recipe}: gradient norms differ from one rank"


# ---- layout validation: every rule fails before training, naming the key ----
@pytest.mark.parametrize("np,override,message", [
    (2, {"parallel__pp": 2, "parallel__pp_schedule": "zigzag"}, "parallel.pp_schedule"),
    (2, {"parallel__pp": 2, "parallel__virtual_stages": 2}, "parallel.virtual_stages"),
    (2, {"parallel__pp": 2, "parallel__pp_layers": "1,2"}, "pipeline split"),
    (2, {"parallel__pp": 2, "parallel__pp_layers": "1,x"}, "parallel.pp_layers"),
    (2, {"parallel__cp": 2, "model__seq_len": 30}, "seq_len"),
    (2, {"parallel__cp": 2, "parallel__cp_method": "star"}, "parallel.cp_method"),
    (2, {"parallel__cp": 4, "parallel__cp_method": "ulysses", "model__heads": 2}, "Ulysses"),
    (2, {"parallel__pp": 4, "model__layers": 4}, "layout"),
    (0, {"optim__zero": 2}, "ZeRO stages 2 and 3"),
    (0, {"optim__zero_fp8_all_gather": "true"}, "needs optim.zero = 1"),
], ids=lambda v: str(v))
def test_bad_layout_fails_before_training(tokens, tmp_path, np, override, message):
    r = run(tiny_args(tokens, tmp_path, **override), np=np)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr, r.stderr
    assert "step " not in r.stdout


@needs_mpirun
def test_every_dimension_at_once_on_eight_ranks(tokens, tmp_path_factory):
    """tp=2 (with SP) x cp=2 x pp=2 on 8 oversubscribed ranks, bf16, 20 steps: within 1e-4 of one rank."""
    common = dict(train__steps=20)
    ref = baseline(tokens, tmp_path_factory, "bf16", **common)
    got, _ = curve(tokens, tmp_path_factory, 8, "bf16", **common, parallel__tp=2, parallel__cp=2, parallel__pp=2,
                   parallel__sequence_parallel="true")
    check(ref, got, "bf16", 20, "tp=2 cp=2 pp=2 sp")


@needs_mpirun
@pytest.mark.parametrize("np,layout", [(0, {}), (2, {"parallel__pp": 2}), (2, {"parallel__tp": 2, "parallel__sequence_parallel": "true"})],
                         ids=lambda v: str(v))
def test_quantized_resume_from_a_middle_checkpoint_is_bit_exact(tokens, tmp_path, np, layout):
    """nvfp4, 10 steps with checkpoints at 5 and 10; a new job resuming from step 5 (stochastic-rounding
    counters, quantized-weight caches refreshed by the optimizer) repeats steps 6-10 bit for bit."""
    import shutil
    a, b = tmp_path / "a", tmp_path / "b"
    common = dict(model__recipe="nvfp4", train__steps=10, checkpoint__every=5, train__sample_tokens=0, **layout)
    r = run(tiny_args(tokens, a, **common), np=np)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    shutil.copytree(a / "checkpoints" / "step_00000005", b / "checkpoints" / "step_00000005")
    (b / "checkpoints" / "latest").write_text("step_00000005\n")
    r = run(tiny_args(tokens, b, checkpoint__resume="true", **common), np=np)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "resumed" in r.stdout and "at step 5" in r.stdout
    full, resumed = losses(a), losses(b)
    assert sorted(resumed) == [6, 7, 8, 9, 10]
    assert all(resumed[s] == full[s] for s in resumed), [(full[s], resumed[s]) for s in resumed]


@needs_mpirun
@pytest.mark.parametrize("np,layout", [(2, {"parallel__pp": 2}), (2, {"parallel__tp": 2}),
                                       (2, {"parallel__pp": 2, "parallel__pp_schedule": "interleaved",
                                            "parallel__virtual_stages": 2})], ids=lambda v: str(v))
def test_tied_embeddings_across_stages(tokens, tmp_path_factory, np, layout):
    """model.tie_embeddings: under pp the last stage's copy of embedding.weight gets the sum of both stages'
    gradients, so it stays equal to the first stage's; the curve matches one rank's tied model (the two
    gradient halves are summed in another order: ~3e-5)."""
    common = dict(train__steps=20, model__tie_embeddings="true", model__layers=4)
    ref = baseline(tokens, tmp_path_factory, "bf16", **common)
    got, stdout = curve(tokens, tmp_path_factory, np, "bf16", **common, **layout)
    check(ref, got, "bf16", 20, "tied " + str(layout))
    untied = baseline(tokens, tmp_path_factory, "bf16", **dict(common, model__tie_embeddings="false"))
    assert max_rel(untied, ref, 20) > 1e-3  # tying changes the model (the check above is not vacuous)


# ---- ZeRO-1 in the trainer (optim.zero = 1): the same updates as the replicated optimizer ----
@needs_mpirun
@pytest.mark.parametrize("np,layout,state", [
    (2, {"parallel__dp": 2}, "fp32"),
    (2, {"parallel__dp": 2}, "fp8"),
    (4, {"parallel__dp": 2, "parallel__tp": 2}, "fp32"),
    (4, {"parallel__cp": 2, "parallel__pp": 2}, "bf16"),
], ids=lambda v: str(v))
def test_zero1_matches_the_replicated_optimizer(tokens, tmp_path_factory, np, layout, state):
    """States sharded over dp x cp, gradients reduce-scattered, parameters all-gathered: every element gets the
    update the replicated optimizer gives it (same index bases, same codec groups), so the curves are equal."""
    common = dict(train__steps=20, optim__state=state, **layout)
    plain, _ = curve(tokens, tmp_path_factory, np, "bf16", **common)
    zero, stdout = curve(tokens, tmp_path_factory, np, "bf16", optim__zero=1, **common)
    assert "ZeRO-1 over dp x cp" in stdout
    assert max_rel(plain, zero, 20) <= 1e-12, (plain, zero)


@needs_mpirun
def test_zero1_resume_from_a_middle_checkpoint_is_bit_exact_and_reshards_to_dp1(tokens, tmp_path):
    import shutil
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    common = dict(train__steps=10, checkpoint__every=5, train__sample_tokens=0, optim__zero=1, parallel__dp=2)
    r = run(tiny_args(tokens, a, **common), np=2)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    shutil.copytree(a / "checkpoints" / "step_00000005", b / "checkpoints" / "step_00000005")
    (b / "checkpoints" / "latest").write_text("step_00000005\n")
    r = run(tiny_args(tokens, b, checkpoint__resume="true", **common), np=2)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    full, resumed = losses(a), losses(b)
    assert sorted(resumed) == [6, 7, 8, 9, 10] and all(resumed[s] == full[s] for s in resumed)
    # One rank without ZeRO-1 reshards the dp = 2 shards of the states (dc71766; refused before): the same
    # steps, equal up to the order of the gradient sums (one rank sums the micro-batches that two ranks split).
    shutil.copytree(a / "checkpoints" / "step_00000005", c / "checkpoints" / "step_00000005")
    (c / "checkpoints" / "latest").write_text("step_00000005\n")
    r = run(tiny_args(tokens, c, checkpoint__resume="true", **dict(common, parallel__dp=1, optim__zero=0)), np=0)
    assert r.returncode == 0 and "resharding read" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    one_rank = losses(c)
    assert sorted(one_rank) == [6, 7, 8, 9, 10]
    assert all(abs(one_rank[s] - full[s]) <= 1e-4 * abs(full[s]) for s in one_rank), (one_rank, full)
