"""A training step's time: nibble-train per recipe against a plain-PyTorch GPT of the same architecture, data
and batch (benchmarks/plain_gpt.py) in BF16 autocast and FP32, measured in the same run (issue 17, goal 1).
Medians over the timed steps after warm-up; ratios to plain torch BF16 are printed, nothing is asserted.

    PYTHONPATH=build/python_package .venv/bin/python benchmarks/bench_train_step.py [--sizes small,medium]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch

from plain_gpt import PlainGpt
from train_runs import BATCH, ROOT, SEQ, SIZES, VOCAB, run_nibble_train, tokens_dir
RECIPES = ["bf16", "fp8_current", "mxfp8", "nvfp4"]
# (label, nibble-train overrides, target): every recipe with nibble's default FP32 attention core, and two with
# the core in BF16 (model.attention_precision), as plain torch's autocast runs it.
RUNS = [(r, ["--model.recipe", r], 1.0 if r == "bf16" else 0.9) for r in RECIPES] + [
    (f"{r}, bf16 attention", ["--model.recipe", r, "--model.attention_precision", "bf16"], 1.0 if r == "bf16" else 0.9)
    for r in ("bf16", "nvfp4")]


def windows(tokens_path, steps, seed=0):
    data = np.memmap(tokens_path, dtype=np.uint16, mode="r")
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        starts = rng.integers(0, len(data) - SEQ - 1, BATCH)
        yield torch.from_numpy(np.stack([data[s:s + SEQ + 1].astype(np.int64) for s in starts]))


def plain_torch_ms(tokens_path, size, autocast, steps, warmup):
    torch.manual_seed(0)
    model = PlainGpt(VOCAB, *SIZES[size], SEQ)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    for i, batch in enumerate(windows(tokens_path, warmup + steps)):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(batch[:, :-1], batch[:, 1:])
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def nibble_ms(binary, tokens, work, size, run, overrides, steps, warmup, threads):
    records = run_nibble_train(binary, tokens, os.path.join(work, f"{size}_{run}"), size, warmup + steps, threads,
                               overrides)
    ms = [r["ms_per_step"] for r in records if "ms_per_step" in r]
    return statistics.median(ms[warmup:])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--sizes", default="small,medium")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    binary = os.path.join(args.build, "nibble-train")
    with tempfile.TemporaryDirectory() as work:
        tokens = tokens_dir(binary, work)
        train = os.path.join(tokens, "train.bin")
        for size in args.sizes.split(","):
            bf16 = plain_torch_ms(train, size, True, args.steps, args.warmup)
            fp32 = plain_torch_ms(train, size, False, args.steps, args.warmup)
            hidden, layers, heads, ffn = SIZES[size]
            print(f"\n{size} (hidden {hidden}, {layers} layers, {heads} heads, ffn {ffn}; seq {SEQ}, batch {BATCH}, "
                  f"{args.threads} threads): median ms/step over {args.steps} steps after {args.warmup} warm-up")
            nibble = {label: nibble_ms(binary, tokens, work, size, label.replace(", ", "_").replace(" ", "_"),
                                       overrides, args.steps, args.warmup, args.threads)
                      for label, overrides, _ in RUNS}
            # The baseline again after the nibble runs: a shared machine drifts over minutes, and the two
            # measurements show by how much; the ratios use their mean.
            bf16_after = plain_torch_ms(train, size, True, args.steps, args.warmup)
            base = (bf16 + bf16_after) / 2
            print(f"  plain torch bf16 autocast {base:8.1f} ms   (1.00x; {bf16:.1f} before the nibble runs, "
                  f"{bf16_after:.1f} after)")
            print(f"  plain torch fp32          {fp32:8.1f} ms   ({fp32 / base:.2f}x)")
            for label, _, target in RUNS:
                ms = nibble[label]
                print(f"  nibble {label:24s} {ms:8.1f} ms   ({ms / base:.2f}x plain torch bf16; target {target}x)")


if __name__ == "__main__":
    main()
