"""A training step's time: nibble-train per recipe against a plain-PyTorch GPT of the same architecture, data
and batch (benchmarks/plain_gpt.py) in BF16 autocast and FP32, measured in the same run (issue 17, goal 1).
Medians over the timed steps after warm-up; ratios to plain torch BF16 are printed, nothing is asserted.

    PYTHONPATH=build/python_package .venv/bin/python benchmarks/bench_train_step.py [--sizes small,medium]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from plain_gpt import PlainGpt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# name -> (hidden, layers, heads, ffn); vocab 256 (bytes), seq 256, batch 8 (the configurations).
SIZES = {"small": (512, 4, 8, 1376), "medium": (768, 7, 12, 2048)}
VOCAB, SEQ, BATCH = 256, 256, 8
RECIPES = ["bf16", "fp8_current", "mxfp8", "nvfp4"]


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


def nibble_ms(binary, tokens_dir, work, size, recipe, steps, warmup, threads):
    hidden, layers, heads, ffn = SIZES[size]
    out = os.path.join(work, f"{size}_{recipe}")
    cmd = [binary, "--config", os.path.join(ROOT, "examples", "configs", "tiny.toml"),
           "--data.train", os.path.join(tokens_dir, "train.bin"), "--data.val", os.path.join(tokens_dir, "val.bin"),
           "--train.out_dir", out, "--train.threads", str(threads), "--model.vocab", str(VOCAB),
           "--model.hidden", str(hidden), "--model.layers", str(layers), "--model.heads", str(heads),
           "--model.ffn_hidden", str(ffn), "--model.seq_len", str(SEQ), "--train.global_batch", str(BATCH),
           "--train.micro_batch", str(BATCH), "--train.steps", str(warmup + steps), "--optim.warmup", "0",
           "--model.recipe", recipe, "--train.sample_tokens", "0", "--train.eval_batches", "1",
           "--train.eval_every", "0", "--checkpoint.every", "0"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"nibble-train failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    with open(os.path.join(out, "metrics.jsonl")) as f:
        ms = [json.loads(line)["ms_per_step"] for line in f if '"ms_per_step"' in line]
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
        tokens_dir = os.path.join(ROOT, "data", "tokens")
        if not os.path.isfile(os.path.join(tokens_dir, "train.bin")):
            tokens_dir = os.path.join(work, "tokens")
            subprocess.run([binary, "prepare", "--input", os.path.join(ROOT, "data", "kjv.txt"), "--out", tokens_dir],
                           check=True, capture_output=True)
        train = os.path.join(tokens_dir, "train.bin")
        for size in args.sizes.split(","):
            bf16 = plain_torch_ms(train, size, True, args.steps, args.warmup)
            fp32 = plain_torch_ms(train, size, False, args.steps, args.warmup)
            hidden, layers, heads, ffn = SIZES[size]
            print(f"\n{size} (hidden {hidden}, {layers} layers, {heads} heads, ffn {ffn}; seq {SEQ}, batch {BATCH}, "
                  f"{args.threads} threads): median ms/step over {args.steps} steps after {args.warmup} warm-up")
            print(f"  plain torch bf16 autocast {bf16:8.1f} ms   (1.00x)")
            print(f"  plain torch fp32          {fp32:8.1f} ms   ({fp32 / bf16:.2f}x)")
            for recipe in RECIPES:
                ms = nibble_ms(binary, tokens_dir, work, size, recipe, args.steps, args.warmup, args.threads)
                print(f"  nibble {recipe:18s} {ms:8.1f} ms   ({ms / bf16:.2f}x plain torch bf16; target "
                      f"{'1.0' if recipe == 'bf16' else '0.9'}x)")


if __name__ == "__main__":
    main()
