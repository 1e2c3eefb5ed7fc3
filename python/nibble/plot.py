"""`nibble-train plot RUN_DIR [RUN_DIR ...] --out DIR` (also `python -m nibble.plot`): PNGs of runs' records.

    loss.png         train loss per step of every run overlaid, held-out (eval) losses as markers
    loss_gap.png     each run's train loss relative to the reference run's at the same step, in %
    throughput.png   tokens/s per step
    memory.png       each run's memory account (launch/memory_account.h): persistent categories and the peak
    (per-layer SNR heat maps need the per-layer statistics of issue 18 item 1, not recorded yet)

Each run is labelled with its directory name and, when it has a checkpoint, the recipe, optimizer states and
layout its manifest records. Reads only <run>/metrics.jsonl and <run>/checkpoints/*/manifest.json.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys


def read_records(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise SystemExit(f"nibble plot: {run_dir} has no metrics.jsonl (is it a nibble-train out_dir?)")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def label_of(run_dir: str) -> str:
    name = os.path.basename(os.path.normpath(run_dir))
    manifests = sorted(glob.glob(os.path.join(run_dir, "checkpoints", "step_*", "manifest.json")))
    if not manifests:
        return name
    with open(manifests[-1]) as f:
        m = json.load(f)
    c, layout = m.get("config", {}), m.get("layout", {})
    dims = " ".join(f"{k}={layout[k]}" for k in ("tp", "cp", "dp", "pp") if layout.get(k, 1) != 1) or "1 rank"
    return f"{name}: {c.get('model.recipe', '?')}, {c.get('optim.state', 'fp32')} states, {dims}"


def curve(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    """step -> value, the last record of a step winning (a resumed run appends)."""
    by_step = {r["step"]: r[key] for r in records if key in r and r[key] is not None}
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="nibble-train plot", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="nibble-train out_dir(s)")
    ap.add_argument("--out", required=True, help="directory for the PNGs (created)")
    ap.add_argument("--reference", help="the run the loss gap is measured against (default: the first)")
    args = ap.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reference = args.reference or args.runs[0]
    if reference not in args.runs:
        args.runs.insert(0, reference)
    runs = [(d, label_of(d), read_records(d)) for d in args.runs]
    os.makedirs(args.out, exist_ok=True)
    written = []

    def save(fig, name):
        path = os.path.join(args.out, name)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    fig, ax = plt.subplots(figsize=(8, 5))
    for _, label, records in runs:
        steps, loss = curve(records, "loss")
        (line,) = ax.plot(steps, loss, label=label, linewidth=1.2)
        eval_steps, eval_loss = curve(records, "eval_loss")
        if eval_steps:
            ax.plot(eval_steps, eval_loss, "o", color=line.get_color(), markersize=5)
    ax.set(xlabel="step", ylabel="loss (nats/token)", title="train loss (lines) and held-out loss (dots)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, "loss.png")

    ref_steps, ref_loss = curve(next(r for d, _, r in runs if d == reference), "loss")
    ref = dict(zip(ref_steps, ref_loss))
    fig, ax = plt.subplots(figsize=(8, 5))
    for d, label, records in runs:
        if d == reference:
            continue
        steps, loss = curve(records, "loss")
        common = [s for s in steps if s in ref]
        gap = [100.0 * (dict(zip(steps, loss))[s] - ref[s]) / ref[s] for s in common]
        ax.plot(common, gap, label=label, linewidth=1.2)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set(xlabel="step", ylabel="loss gap (%)", title=f"train loss relative to {label_of(reference)}")
    ax.grid(alpha=0.3)
    if len(runs) > 1:
        ax.legend(fontsize=8)
    save(fig, "loss_gap.png")

    fig, ax = plt.subplots(figsize=(8, 5))
    for _, label, records in runs:
        steps, tps = curve(records, "tokens_per_s")
        ax.plot(steps, tps, label=label, linewidth=1.0)
    ax.set(xlabel="step", ylabel="tokens/s", title="throughput")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, "throughput.png")

    accounts = [(label, next((r["memory"] for r in records if "memory" in r), None)) for _, label, records in runs]
    accounts = [(label, m) for label, m in accounts if m]
    if accounts:
        parts = ["parameters", "gradients", "optimizer_states", "weight_caches", "transient_at_peak"]
        fig, ax = plt.subplots(figsize=(10, 1.5 + 0.6 * len(accounts)))
        for i, (label, m) in enumerate(accounts):
            left = 0.0
            for j, part in enumerate(parts):
                width = m.get(part, 0) / 2**20
                ax.barh(i, width, left=left, color=f"C{j}", label=part.replace("_", " ") if i == 0 else None)
                left += width
        ax.set_yticks(range(len(accounts)), [label for label, _ in accounts], fontsize=8)
        ax.set(xlabel="MiB (rank 0; the bar's end is the allocator's peak)", title="memory account")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        save(fig, "memory.png")

    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
