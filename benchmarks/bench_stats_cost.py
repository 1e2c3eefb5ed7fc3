"""What per-layer quantization statistics (train.stats_every, docs/STATS.md) cost: nibble-train's step time with
statistics on every step against the same run without, measured in the same invocation, and the cost that implies
at train.stats_every = 50 (one measured step in 50). Issue 18's goal: <= 5% of step time at stats_every = 50.

Measuring every step and dividing by 50, rather than timing a 50-step interval, is deliberate: one extra-cost step
in 50 is smaller than this machine's step-to-step noise, while the cost of a measured step is not.

    python benchmarks/bench_stats_cost.py [--binary build/nibble-train] [--size small] [--steps 12]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile

from train_runs import ROOT, run_nibble_train, tokens_dir


def median_step_ms(records: list[dict], skip: int) -> float:
    times = [r["ms_per_step"] for r in records if "ms_per_step" in r][skip:]
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "nibble-train"))
    ap.add_argument("--size", default="small", choices=["small", "medium"])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--recipes", default="nvfp4,fp8_current,mxfp8")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        tokens = tokens_dir(args.binary, work)
        print(f"{args.size} model, {args.steps} steps per run (the first 2 not counted), {args.threads} threads")
        print(f"{'recipe':<12} {'off ms':>8} {'every step ms':>14} {'measured step':>14} {'at stats_every=50':>18}")
        for recipe in args.recipes.split(","):
            times = {}
            for every in (0, 1):
                out = os.path.join(work, f"{recipe}_{every}")
                records = run_nibble_train(args.binary, tokens, out, args.size, args.steps, args.threads,
                                           ["--model.recipe", recipe, "--train.stats_every", str(every)])
                times[every] = median_step_ms(records, 2)
            extra = times[1] / times[0] - 1.0
            print(f"{recipe:<12} {times[0]:>8.1f} {times[1]:>14.1f} {100 * extra:>13.1f}% {100 * extra / 50:>17.2f}%")


if __name__ == "__main__":
    main()
