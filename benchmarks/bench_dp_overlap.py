"""The data-parallel gradient reduction overlapped with backward (parallel.overlap_grad_reduce, issue 17 item 5).
nibble-train at dp = 2 (two ranks under mpirun) with the reduction after backward (off: one flat all-reduce, or
ZeRO-1's reduce-scatter buckets all started at the end) and overlapped (on: buckets started from backward's
hooks), plain and ZeRO-1. Per mode, medians over the steps (all but the first 2) of rank 0's
`grad_reduce_exposed_ms` -- the time the step waits in the reduction once backward is over, what overlap exists
to hide -- and ms/step, each as a ratio to `off` of the same optimizer, measured in the same run. A benchmark,
not a test: it is a timing.

    python benchmarks/bench_dp_overlap.py [--binary build/nibble-train] [--size small] [--bucket-mb 25 5]

Each rank runs one thread (--threads): with 2 ranks on a 2-core machine there is no idle core to reduce on, so
the reduction's arithmetic competes with backward's; what overlap removes is the wait for the peer's data.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile

from train_runs import ROOT, run_nibble_train, tokens_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "nibble-train"))
    ap.add_argument("--size", default="small", choices=["small", "medium"])
    ap.add_argument("--recipe", default="nvfp4")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    ap.add_argument("--micro-batches", type=int, default=2, help="per rank and step (batch 8 over dp = 2)")
    ap.add_argument("--bucket-mb", type=float, nargs="+", default=[25.0, 5.0])
    args = ap.parse_args()
    per_rank = 8 // 2
    if per_rank % args.micro_batches:
        raise SystemExit(f"--micro-batches {args.micro_batches} must divide the {per_rank} samples per rank")
    with tempfile.TemporaryDirectory() as work:
        tokens = tokens_dir(args.binary, work)
        print(f"{args.size} model, {args.recipe}, dp = 2, {args.micro_batches} micro-batch(es) per rank, "
              f"{args.threads} thread(s) per rank, {args.steps} steps per mode (median of all but the first 2)")
        print(f"{'optimizer':<9} {'reduction':<24} {'exposed ms':>10} {'vs off':>7} {'ms/step':>8} {'vs off':>7}")
        for zero in (0, 1):
            base = None
            modes = [("off", "false", 25.0)] + [(f"overlapped, {mb:g} MB", "true", mb) for mb in args.bucket_mb]
            for name, overlap, mb in modes:
                records = run_nibble_train(
                    args.binary, tokens, os.path.join(work, f"z{zero}_{overlap}_{mb:g}"), args.size, args.steps,
                    args.threads,
                    ["--model.recipe", args.recipe, "--parallel.dp", "2", "--optim.zero", str(zero),
                     "--train.micro_batch", str(per_rank // args.micro_batches),
                     "--parallel.overlap_grad_reduce", overlap, "--parallel.grad_bucket_mb", str(mb)],
                    ranks=2)
                steps = [r for r in records if "ms_per_step" in r][2:]
                exposed = statistics.median(r["grad_reduce_exposed_ms"] for r in steps)
                ms = statistics.median(r["ms_per_step"] for r in steps)
                base = base or (exposed, ms)
                print(f"{'ZeRO-1' if zero else 'plain':<9} {name:<24} {exposed:>10.1f} {exposed / base[0]:>6.2f}x "
                      f"{ms:>8.0f} {ms / base[1]:>6.2f}x")


if __name__ == "__main__":
    main()
