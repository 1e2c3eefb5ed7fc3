"""Where a 4-bit recipe's gap to bf16 comes from, and whether the adaptive policy's SNR measure finds it (issue 18
item 4, docs/ADAPTIVE.md). At the recipe study's default size and length (benchmarks/study_recipes.py: the default
model, the 1024-token BPE of the KJV, 900 steps, lr 3e-3), with every transformer block in one 4-bit recipe (the
LM head high precision, as in the study):

  - the fixed recipe, with quantization statistics every 45 steps (they do not change the run: measuring only);
  - oracles: one block in BF16 (each block in turn), and one operand in BF16 in every block (x, w, dy; on nvfp4
    the other wgrad operand then drops its RHT, which a BF16 operand cannot share);
  - model.precision_policy = "adaptive" (ladder mxfp8 -> bf16, patience 2) at a few SNR thresholds, and with
    model.adaptive_measure = "loss_probe" at a few gain thresholds (a probe every 45 steps, 4 batches), on that
    ladder and on "bf16" alone, and with a probe every 15 steps;
  - each block's worst SNR (the SNR policy's measure) averaged over the fixed run's second half.

    python benchmarks/bench_gap_location.py [--recipe nvfp4|mxfp4] [--seeds 0,1] [--thresholds 16.8,17.0]
        [--probe-gains 0.05,0.1] [--parallel 2] [--out runs/gap_location] [--binary build/nibble-train]

Prints markdown: each run's held-out loss and the share of the recipe's gap to bf16 it recovers, per seed (the runs
of a seed share initial weights and batches), and the Linears left in 4 bits. One thread a run; ~80 s a run here."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import study_recipes as study  # noqa: E402

ALL_BLOCKS = ["--model.bf16_first", "0", "--model.bf16_last", "0"]
STATS_EVERY = "45"
DEFAULT_THRESHOLDS = {"nvfp4": "16.8,17.0", "mxfp4": "13.0,13.5"}
DEFAULT_PROBE_GAINS = "0.05,0.1"  # % of the probe loss
PROBE_SOONER = "15"


def fixed_run(recipe: str) -> str:
    """The name of the run every share of the gap is measured from."""
    return f"{recipe} (fixed)"


def plan(recipe: str, layers: int, thresholds: list[str], probe_gains: list[str]) -> dict[str, list[str]]:
    """Run name -> the nibble-train arguments that replace the study's recipe arguments."""
    base = ["--model.recipe", recipe]
    out = {"bf16": ["--model.recipe", "bf16"] + ALL_BLOCKS,
           fixed_run(recipe): base + ALL_BLOCKS + ["--train.stats_every", STATS_EVERY]}
    for i in range(layers):
        names = ",".join("bf16" if j == i else recipe for j in range(layers))
        out[f"block {i} in bf16"] = base + ALL_BLOCKS + ["--model.layer_recipes", names]
    for operand, partner in (("x", "dy_col"), ("w", None), ("dy", "x_col")):
        overrides = f"{operand}.quantized=false" + (f",{partner}.rht=false" if partner and recipe == "nvfp4" else "")
        out[f"{operand} in bf16 (every block)"] = base + ALL_BLOCKS + ["--model.recipe_overrides", overrides]
    def adaptive(measure: list[str], ladder: str = "mxfp8, bf16", every: str = STATS_EVERY) -> list[str]:
        return base + ALL_BLOCKS + ["--train.stats_every", every, "--model.precision_policy", "adaptive"] + \
            measure + ["--model.adaptive_patience", "2", "--model.adaptive_ladder", ladder]
    for t in thresholds:
        out[f"adaptive, < {t} dB"] = adaptive(["--model.adaptive_snr_db", t])
    # The loss probe on the SNR runs' ladder, straight to BF16 (one rung: what the oracles measure), and every 15
    # steps instead of 45 (it can act three times sooner).
    for g in probe_gains:
        probe = ["--model.adaptive_measure", "loss_probe", "--model.adaptive_probe_gain", g]
        out[f"adaptive, loss probe >= {g}%"] = adaptive(probe)
        out[f"adaptive, loss probe >= {g}%, ladder bf16"] = adaptive(probe, "bf16")
        out[f"adaptive, loss probe >= {g}%, every {PROBE_SOONER} steps"] = adaptive(probe, every=PROBE_SOONER)
    return out


def block_snr(run_dir: str) -> dict[str, float]:
    """Each block's worst copy SNR (dB; the adaptive policy's measure), the mean over its Linears and the
    statistics steps of the run's second half."""
    with open(os.path.join(run_dir, "stats.jsonl")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    steps = sorted({r["step"] for r in records})
    late = set(steps[len(steps) // 2:])
    per_block: dict[str, list[float]] = {}
    for r in records:
        snrs = [v["snr_db"] for v in r["operands"].values() if v.get("snr_db") is not None]
        if r["step"] in late and snrs:
            block = ".".join(r["layer"].split(".")[:2])
            per_block.setdefault(block, []).append(min(snrs))
    return {b: statistics.mean(v) for b, v in per_block.items()}


def precision_at_end(run_dir: str) -> tuple[str, list[str]]:
    """An adaptive run's "N of M in 4 bits (P% of weights)" and the Linears it raised; ("", []) for a fixed run."""
    records = study.load_records(run_dir)
    p = [r["precision"] for r in records if "precision" in r]
    if not p:
        return "", []
    raised = sorted({r["precision_switch"]["linear"] for r in records if "precision_switch" in r})
    end = p[-1]
    share = 100 * end["four_bit_weight_share"]
    return f"{end['four_bit']} of {end['linears']} in 4 bits ({share:.0f}% of weights)", raised


def block_switches(run_dir: str) -> str:
    """A loss-probe run's decisions, a block at a time: "layers.0 -> mxfp8 after step 270, ..."."""
    seen = []
    for r in study.load_records(run_dir):
        if "precision_switch" in r:
            block = ".".join(r["precision_switch"]["linear"].split(".")[:2])
            entry = f"{block} -> {r['precision_switch']['to']} after step {r['step']}"
            if entry not in seen:
                seen.append(entry)
    return ", ".join(seen) or "none"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.path.join(study.ROOT, "build", "nibble-train"))
    ap.add_argument("--recipe", default="nvfp4", choices=sorted(DEFAULT_THRESHOLDS))
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--thresholds", default=None, help="SNR thresholds in dB (default per recipe)")
    ap.add_argument("--probe-gains", default=DEFAULT_PROBE_GAINS, help="loss probe thresholds in %% ('' for none)")
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(study.ROOT, "runs", "gap_location"))
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    thresholds = (a.thresholds or DEFAULT_THRESHOLDS[a.recipe]).split(",")
    layers = 4  # examples/configs/default.toml
    runs = plan(a.recipe, layers, thresholds, [g for g in a.probe_gains.split(",") if g])
    tokens = study.prepare_tokens(a.binary, os.path.join(study.ROOT, "runs", "study"))
    jobs = []
    for seed in seeds:
        for name, args in runs.items():
            d = os.path.join(a.out, a.recipe, f"{name}-s{seed}".replace(" ", "_").replace(",", "").replace("<", "lt")
                             .replace(">=", "ge").replace("%", "pct"))
            cmd = study.command(a.binary, tokens, d, "default", "bf16", seed)
            cmd = cmd[:cmd.index("--model.recipe")] + args  # the study's run with this recipe instead
            jobs.append((name, seed, d, cmd))
    with ThreadPoolExecutor(a.parallel) as pool:
        outcomes = list(pool.map(lambda j: study.train(j[3], j[2]), jobs))
    final = {(name, seed): study.summarize(d)["final"] for name, seed, d, _ in jobs}
    dirs = {(name, seed): d for name, seed, d, _ in jobs}
    fixed = fixed_run(a.recipe)
    print(f"{len([o for o in outcomes if o != 'kept'])} runs trained, {outcomes.count('kept')} kept from {a.out}\n")
    print(f"| run ({a.recipe} in every block, {study.SIZES['default']['steps']} steps) | "
          + " | ".join(f"seed {s}: held-out loss, share of the gap recovered" for s in seeds) + " |")
    print("|---|" + "---|" * len(seeds))
    raised_lines = []
    for name in runs:
        cells = []
        for s in seeds:
            loss, top, bottom = final[(name, s)], final[(fixed, s)], final[("bf16", s)]
            cell = f"{loss:.4f}" + ("" if name in ("bf16", fixed) else f", {100 * (top - loss) / (top - bottom):.0f}%")
            where, raised = precision_at_end(dirs[(name, s)])
            if where:
                cell += f"; {where}"
                raised_lines.append(f"- {name}, seed {s}, raised: " + (block_switches(dirs[(name, s)])
                                    if "loss probe" in name else ", ".join(raised) or "none"))
            cells.append(cell)
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\n" + "\n".join(raised_lines))
    for s in seeds:
        snr = block_snr(dirs[(fixed, s)])
        print(f"\nseed {s}, {fixed}: each block's worst-copy SNR, mean over the second half: "
              + ", ".join(f"{b} {v:.2f} dB" for b, v in snr.items()))


if __name__ == "__main__":
    main()
