"""`nibble-train plot RUN_DIR [RUN_DIR ...] --out DIR` (also `python -m nibble.plot`): PNGs of runs' records.

    loss.png         train loss per step of every run overlaid, held-out (eval) losses as markers
    loss_gap.png     each run's train loss relative to the reference run's at the same step, in %
    throughput.png   tokens/s per step
    memory.png       each run's memory account (launch/memory_account.h): persistent categories and the peak
    snr_<run>.png    per run with quantization statistics (train.stats_every, <run>/stats.jsonl): the SNR in dB
                     of every quantized operand copy of every Linear (rows) over the steps (columns)

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


def read_stats(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, "stats.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def snr_table(stats: list[dict]) -> tuple[list[str], list[int], list[list[float]]]:
    """Rows "layer operand" in the model's order, columns the steps, cells the SNR in dB (NaN: no record or an
    exact copy). The last record of a (step, layer) wins, as for the losses."""
    by_key = {(r["step"], r["layer"]): r["operands"] for r in stats}
    steps = sorted({step for step, _ in by_key})
    rows = []
    for r in stats:
        for role in r["operands"]:
            if f"{r['layer']} {role}" not in rows:
                rows.append(f"{r['layer']} {role}")
    cells = []
    for row in rows:
        layer, role = row.split(" ")
        line = []
        for step in steps:
            fig = by_key.get((step, layer), {}).get(role)
            line.append(float("nan") if not fig or fig.get("snr_db") is None else fig["snr_db"])
        cells.append(line)
    return rows, steps, cells


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

    for d, label, _ in runs:
        rows, steps, cells = snr_table(read_stats(d))
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(3.5 + 0.35 * min(len(steps), 40), 1.5 + 0.16 * len(rows)))
        image = ax.imshow(cells, aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_yticks(range(len(rows)), rows, fontsize=6)
        ax.set_xticks(range(len(steps)), [str(s) for s in steps], fontsize=7, rotation=90)
        ax.set(xlabel="step", title=f"quantization SNR (dB) per operand copy: {label}")
        fig.colorbar(image, ax=ax, label="SNR (dB)")
        save(fig, f"snr_{os.path.basename(os.path.normpath(d))}.png")

    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
