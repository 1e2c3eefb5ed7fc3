"""Adaptive precision where it matters (docs/ADAPTIVE.md): the default model with every Linear in NVFP4 -- the LM
head and the first and last layers included -- at a high learning rate (1e-2), against bf16, mxfp8 and
model.precision_policy = "adaptive" at a few SNR thresholds. Prints one markdown row per run: the final held-out
loss, the share of the NVFP4-to-bf16 gap it recovers, and how many Linears (and what share of their weights) end in
4 bits.

    python benchmarks/bench_adaptive.py [--binary build/nibble-train] [--steps 300] [--seed 0]
        [--thresholds 16.8,16.9,17.0] [--parallel 2] [--out runs/bench_adaptive]

One rank per run with one thread each; --parallel runs that many at once (this machine: 2 cores, ~3 min a run)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_runs import ROOT, tokens_dir  # noqa: E402

ALL_LAYERS = ["--model.bf16_first", "0", "--model.bf16_last", "0"]


def runs(thresholds: list[str]) -> dict[str, list[str]]:
    out = {
        "bf16": ["--model.recipe", "bf16"],
        "nvfp4 (fixed)": ["--model.recipe", "nvfp4", "--model.lm_head_recipe", "nvfp4"],
        "mxfp8 (fixed)": ["--model.recipe", "mxfp8", "--model.lm_head_recipe", "mxfp8"],
    }
    for t in thresholds:
        out[f"nvfp4, adaptive < {t} dB"] = ["--model.recipe", "nvfp4", "--model.lm_head_recipe", "nvfp4",
                                           "--model.precision_policy", "adaptive", "--model.adaptive_snr_db", t,
                                           "--model.adaptive_patience", "2"]
    return out


def train(binary: str, tokens: str, out: str, steps: int, lr: str, seed: int, extra: list[str]) -> dict:
    cmd = [binary, "--config", os.path.join(ROOT, "examples", "configs", "default.toml"), "--parallel.dp", "1",
           "--data.train", os.path.join(tokens, "train.bin"), "--data.val", os.path.join(tokens, "val.bin"),
           "--train.out_dir", out, "--train.threads", "1", "--train.steps", str(steps), "--optim.lr", lr,
           "--train.stats_every", "25", "--train.eval_every", "100", "--train.sample_tokens", "0",
           "--checkpoint.every", "0", "--model.seed", str(seed)] + ALL_LAYERS + extra
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"nibble-train failed ({out}):\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    with open(os.path.join(out, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    final = [rec for rec in records if rec.get("final")][-1]["eval_loss"]
    precision = [rec["precision"] for rec in records if "precision" in rec]
    return {"eval": final, "precision": precision[-1] if precision else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "nibble-train"))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", default="1e-2")
    ap.add_argument("--seed", type=int, default=0, help="model.seed (initial weights, stochastic rounding)")
    ap.add_argument("--thresholds", default="16.8,16.9,17.0")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(ROOT, "runs", "bench_adaptive"))
    a = ap.parse_args()
    tokens = tokens_dir(a.binary, a.out)
    plan = runs(a.thresholds.split(","))
    with ThreadPoolExecutor(a.parallel) as pool:
        futures = {name: pool.submit(train, a.binary, tokens, os.path.join(a.out, str(i)), a.steps, a.lr, a.seed,
                                     extra)
                   for i, (name, extra) in enumerate(plan.items())}
        results = {name: f.result() for name, f in futures.items()}
    bf16, nvfp4 = results["bf16"]["eval"], results["nvfp4 (fixed)"]["eval"]
    print(f"| run (lr {a.lr}, {a.steps} steps, seed {a.seed}) | held-out loss | gap to bf16 | of the nvfp4 gap recovered | "
          "Linears in 4 bits |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        recovered = (nvfp4 - r["eval"]) / (nvfp4 - bf16) if nvfp4 != bf16 else float("nan")
        p = r["precision"]
        four = (f"{p['four_bit']} of {p['linears']} ({100 * p['four_bit_weight_share']:.0f}% of the weights)" if p
                else "all" if name.startswith("nvfp4") else "none")
        print(f"| {name} | {r['eval']:.4f} | {100 * (r['eval'] - bf16) / bf16:+.2f}% | "
              f"{'' if name == 'bf16' else f'{100 * recovered:.0f}%'} | {four} |")


if __name__ == "__main__":
    main()
