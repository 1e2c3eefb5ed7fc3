"""model.recompute in nibble-train (issue 17 item 4): the per-step losses with the attention core or whole layers
recomputed equal those without, bit for bit, at one rank and under a 1F1B pipeline (whose backwards run after
other micro-batches' forwards) with tensor parallelism; the memory account's peak drops. (Gradients bit for bit,
per recipe: tests/core/test_recompute.cpp.)"""
import json
import os

import pytest

from test_train_cli import losses, needs_mpirun, run, tiny_args, tokens  # noqa: F401

STEPS = dict(train__steps=3, optim__warmup=0, train__global_batch=4, train__micro_batch=2, train__sample_tokens=0)


def peak(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return next(json.loads(line)["memory"]["peak"] for line in f if '"memory"' in line)


def test_recompute_keeps_the_losses_and_lowers_the_peak(tokens, tmp_path):
    runs = {}
    for mode in ("none", "selective", "full"):
        out = tmp_path / mode
        r = run(tiny_args(tokens, out, model__recipe="nvfp4", model__recompute=mode, **STEPS))
        assert r.returncode == 0, r.stdout + r.stderr
        runs[mode] = (losses(out), peak(out))
    assert runs["selective"][0] == runs["none"][0] and runs["full"][0] == runs["none"][0]
    assert runs["full"][1] < runs["none"][1], runs


@needs_mpirun
def test_recompute_under_a_pipeline_with_tp(tokens, tmp_path):
    layout = dict(parallel__pp=2, parallel__tp=2, parallel__pp_schedule="1f1b", parallel__sequence_parallel="true")
    result = {}
    for mode in ("none", "full"):
        out = tmp_path / mode
        r = run(tiny_args(tokens, out, model__recipe="nvfp4", model__recompute=mode, **layout, **STEPS), np=4)
        assert r.returncode == 0, r.stdout + r.stderr
        result[mode] = losses(out)
    assert result["full"] == result["none"] and len(result["none"]) == 3
