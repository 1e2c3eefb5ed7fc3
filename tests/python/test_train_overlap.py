"""parallel.overlap_grad_reduce in nibble-train (issue 17 item 5): the dp x cp gradient reduction started from
backward's hooks gives the same per-step losses and gradient norms, bit for bit, as the reduction after backward
(overlap_grad_reduce = false, the trainer's path before overlap existed) -- plain and ZeRO-1 at dp = 2 with two
micro-batches per rank (hooks must wait for the last one) and a step skipped for a non-finite gradient (the
buckets launched in its backward are drained), and under a 1F1B pipeline with tied embeddings (whose gradient
is summed over pp after backward, so its bucket waits) and with tp + sequence parallelism (the norm weights wait
for their tp sum). The metrics say how many buckets backward launched, and the start-up line how many there are:
the hooks really started them. (Timing: benchmarks/bench_dp_overlap.py.)"""
import json
import os
import re
import subprocess

import pytest

from test_train_cli import BINARY, ENV, MPIRUN, needs_mpirun, tiny_args, tokens  # noqa: F401

pytestmark = [needs_mpirun, pytest.mark.skipif(not os.path.isfile(BINARY), reason=f"{BINARY} not built")]

# Two micro-batches per dp rank; buckets of 0.05 MB (~12.5k FP32 elements) cut the tiny model into several.
STEPS = dict(train__steps=4, optim__warmup=0, train__global_batch=4, train__micro_batch=1, train__sample_tokens=0,
             parallel__grad_bucket_mb=0.05)


def run(args, np, env=None):
    cmd = [MPIRUN, "-np", str(np), "--oversubscribe", "--bind-to", "none", BINARY] + args
    r = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=600, env=dict(ENV, **(env or {})))
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def records(out):
    """step -> the training record of metrics.jsonl."""
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return {rec["step"]: rec for rec in map(json.loads, f) if "loss" in rec}


def curve(recs):
    return {s: (r["loss"], r["grad_norm"], r["skipped"]) for s, r in recs.items()}


def buckets_in_startup_line(stdout):
    m = re.search(r"gradient reduction over dp x cp: overlapped with backward, (\d+) bucket", stdout)
    assert m, stdout
    return int(m.group(1))


def off_and_on(tokens, out, np, env=None, **overrides):
    """The same job with overlap_grad_reduce false and true: {"false"|"true": (stdout, records)}."""
    runs = {}
    for overlap in ("false", "true"):
        r = run(tiny_args(tokens, out / overlap, parallel__overlap_grad_reduce=overlap, **overrides, **STEPS), np=np,
                env=env)
        runs[overlap] = (r.stdout, records(out / overlap))
    return runs


def test_overlap_matches_the_reduction_after_backward_plain_and_zero1(tokens, tmp_path):
    # Step 2's gradient of layers.0.up.weight becomes NaN on every rank: that step is skipped after its backward
    # launched buckets, which must complete (and be forgotten) before step 3.
    fault = {"NIBBLE_FAULT": "nan_grad:layers.0.up.weight:2:1"}
    for zero in (0, 1):
        runs = off_and_on(tokens, tmp_path / f"zero{zero}", 2, fault, model__recipe="nvfp4", parallel__dp=2,
                          optim__zero=zero)
        off, on = runs["false"][1], runs["true"][1]
        assert sorted(on) == [1, 2, 3, 4] and on[2]["skipped"] and not on[3]["skipped"], on
        assert curve(on) == curve(off), (zero, curve(on), curve(off))
        # Every parameter's hook fired in backward (no tp / pp fix-ups here): every bucket started there.
        n = buckets_in_startup_line(runs["true"][0])
        assert n > 1, runs["true"][0]
        assert all(rec["grad_buckets_in_backward"] == n for s, rec in on.items() if s != 2), on
        assert all(rec["grad_buckets_in_backward"] == 0 for rec in off.values()), off
        assert "after backward (parallel.overlap_grad_reduce = false)" in runs["false"][0]
        assert on[1]["grad_reduce_exposed_ms"] >= 0 and on[2]["grad_reduce_exposed_ms"] is None


def test_overlap_under_a_pipeline_with_tied_embeddings(tokens, tmp_path):
    runs = off_and_on(tokens, tmp_path, 4, model__recipe="bf16", parallel__pp=2, parallel__dp=2,
                      parallel__pp_schedule="1f1b", model__tie_embeddings="true")
    assert curve(runs["true"][1]) == curve(runs["false"][1]) and len(runs["true"][1]) == 4
    # Rank 0 is the first stage: its embedding.weight (last in the buffer) is summed with the last stage's copy
    # after backward, so backward launches every bucket but the last.
    n = buckets_in_startup_line(runs["true"][0])
    assert all(rec["grad_buckets_in_backward"] == n - 1 for rec in runs["true"][1].values()), runs["true"][1]


def test_overlap_with_sequence_parallel_defers_the_norm_weights(tokens, tmp_path):
    # Under tp + SP the norm weights' gradients are summed over tp after backward; the final norm sits in the
    # first bucket, so that bucket and, in order, every later one wait until then -- same losses, nothing started
    # in backward (docs/PARALLEL.md "In the trainer").
    runs = off_and_on(tokens, tmp_path, 4, model__recipe="nvfp4", parallel__tp=2,
                      parallel__sequence_parallel="true", parallel__dp=2)
    assert curve(runs["true"][1]) == curve(runs["false"][1]) and len(runs["true"][1]) == 4
    assert buckets_in_startup_line(runs["true"][0]) > 1
    assert all(rec["grad_buckets_in_backward"] == 0 for rec in runs["true"][1].values()), runs["true"][1]
