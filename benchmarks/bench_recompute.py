"""Activation recomputation (model.recompute, issue 17 item 4): memory for time. nibble-train per mode -- none,
selective (the attention core) and full (every transformer layer) -- at the benchmarks' model sizes: the memory
account's peak of live allocations over the first two steps (launch/memory_account.h, not RSS) and the median
ms/step, each as a ratio to `none` measured in the same run.

    python benchmarks/bench_recompute.py [--binary build/nibble-train] [--size small] [--recipe nvfp4]
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
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        tokens = tokens_dir(args.binary, work)
        print(f"{args.size} model, {args.recipe}, {args.steps} steps per mode (median of all but the first 2), "
              f"{args.threads} threads")
        print(f"{'recompute':<10} {'peak MiB':>9} {'vs none':>8} {'ms/step':>8} {'vs none':>8}")
        base = None
        for mode in ("none", "selective", "full"):
            records = run_nibble_train(args.binary, tokens, os.path.join(work, mode), args.size, args.steps,
                                       args.threads, ["--model.recipe", args.recipe, "--model.recompute", mode])
            peak = next(r["memory"]["peak"] for r in records if "memory" in r) / 2**20
            ms = statistics.median([r["ms_per_step"] for r in records if "ms_per_step" in r][2:])
            base = base or (peak, ms)
            print(f"{mode:<10} {peak:>9.0f} {peak / base[0]:>7.2f}x {ms:>8.0f} {ms / base[1]:>7.2f}x")


if __name__ == "__main__":
    main()
