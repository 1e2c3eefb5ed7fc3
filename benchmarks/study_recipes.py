"""The recipe study (issue 18 item 5): every recipe nibble ships, and the NVFP4 paper's ablations, trained on the
KJV with the BPE tokenizer at two model sizes and several seeds; writes docs/RESULTS.md (held-out loss per recipe,
mean and spread over seeds, gap to bf16, tokens/s, memory, the published orderings next to ours) and the loss-curve
PNGs in docs/images/.

    python benchmarks/study_recipes.py [--binary build/nibble-train] [--out runs/study] [--parallel 2]
        [--seeds 0,1] [--sizes default,10m] [--only RECIPE,...] [--all-recipes] [--report-only] [--smoke]

Sized for this machine (2 cores), one thread a run, two runs at a time, each run long enough that bf16's held-out
loss falls by less than 1% over its last tenth (the curve has flattened): every recipe at the default size and
three at 10M (bf16, fp8_current, nvfp4; SIZES says why those), sized to fit the hour (docs/RESULTS.md gives the
last full run's wall time); --all-recipes adds the other ten at 10M, about two more hours here. Finished runs are
kept in --out and not rerun (a run is identified by its full command line), so an interrupted study resumes,
--all-recipes after a plain study runs only the missing runs, and --report-only rewrites the report from the runs
on disk. --smoke runs a few steps into a scratch directory and writes its report there (a check that every recipe
starts and the report builds, not a result)."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_runs import ROOT  # noqa: E402

BPE_VOCAB = 1024
# Every run is this config with overrides (none of them touch the batch or the sequence length).
CONFIG = os.path.join(ROOT, "examples", "configs", "default.toml")

# Each size: the default model (examples/configs/default.toml, with the BPE vocabulary) and a >= 10M one, each
# trained until bf16's held-out loss has flattened. Held-out loss is measured at every tenth of the steps. Measured
# on this machine (2026-12-07), bf16's change over the last tenth of a run:
#   - default size, mean of seeds 0 and 1: -0.87% at 800 steps, -0.86% at 900, -0.79% at 1000, -0.70% at 1300
#     (seed 0 alone: -0.68% at 1500). It runs 900 steps: at 1300 the study took 65.6 min (62.5 by its run times
#     once the RHT fallback was fixed), over the hour.
#   - 10M, seed 0: -1.3% over the last eighth of 800 steps, -1.00% over the last tenth of 1200. One 10M run takes
#     10-14 minutes here (1300 steps, one thread, two runs side by side: bf16 625 s, fp8_current 649 s, nvfp4
#     820 s), so the hour holds three recipes at 10M, two seeds each, beside the default size's 26 runs: bf16,
#     fp8_current (Transformer Engine's default FP8 recipe) and nvfp4 (the NVFP4 paper's recipe; with fp8_current,
#     its "NVFP4 above FP8").
# `recipes`: the recipes a size runs without --all-recipes (None: every one).
SIZES = {
    "default": {"args": [], "steps": 900, "lr": "3e-3", "warmup": "20", "recipes": None},
    "10m": {"args": ["--model.hidden", "384", "--model.layers", "6", "--model.heads", "6",
                     "--model.ffn_hidden", "960"],
            "steps": 1300, "lr": "2e-3", "warmup": "10", "recipes": ["bf16", "fp8_current", "nvfp4"]},
}

# Which transformer blocks stay in BF16 (the LM head is high precision in every run, as in all the papers).
ALL_BLOCKS = ["--model.bf16_first", "0", "--model.bf16_last", "0"]
LAST_BLOCK_BF16 = ["--model.bf16_first", "0", "--model.bf16_last", "1"]
NO_SR_BACKWARD = "dy.rounding=nearest,w_col.rounding=nearest,x_col.rounding=nearest"

# name -> (nibble-train arguments, what the row is). FP8 and MX runs quantize every block (as TE, DeepSeek-V3
# and Quartet do); the NVFP4 paper's recipe keeps its last blocks in BF16 (here the last of 4 or 6).
RECIPES: dict[str, tuple[list[str], str]] = {
    "bf16": (["--model.recipe", "bf16"], "the reference: operands rounded to BF16, FP32 sums"),
    "fp8_delayed": (["--model.recipe", "fp8_delayed"] + ALL_BLOCKS, "TE DelayedScaling, E4M3/E5M2"),
    "fp8_current": (["--model.recipe", "fp8_current"] + ALL_BLOCKS, "TE Float8CurrentScaling"),
    "fp8_block": (["--model.recipe", "fp8_block"] + ALL_BLOCKS, "DeepSeek-V3: 1x128 activations, 128x128 weights"),
    "mxfp8": (["--model.recipe", "mxfp8"] + ALL_BLOCKS, "MXFP8 E4M3, E8M0 scales per 32"),
    "nvfp4": (["--model.recipe", "nvfp4"] + LAST_BLOCK_BF16,
              "NVFP4 paper: 2-D weight scales, RHT on wgrad, SR on gradients, last block BF16"),
    "nvfp4 no RHT": (["--model.recipe", "nvfp4", "--model.recipe_overrides", "x_col.rht=false,dy_col.rht=false"]
                     + LAST_BLOCK_BF16, "ablation: no Hadamard transform on the wgrad operands"),
    "nvfp4 no SR": (["--model.recipe", "nvfp4", "--model.recipe_overrides", "dy.rounding=nearest"]
                    + LAST_BLOCK_BF16, "ablation: gradients rounded to nearest"),
    "nvfp4 1-D W": (["--model.recipe", "nvfp4", "--model.recipe_overrides", "w.scaling_2d=false"]
                    + LAST_BLOCK_BF16, "ablation: 1x16 weight blocks instead of 16x16 tiles"),
    "nvfp4 all blocks": (["--model.recipe", "nvfp4"] + ALL_BLOCKS, "ablation: every block in NVFP4"),
    "mxfp4": (["--model.recipe", "mxfp4"] + ALL_BLOCKS, "MXFP4, E8M0 scales per 32, SR on gradients"),
    "quartet SR": (["--model.recipe", "mxfp4_quartet"] + ALL_BLOCKS,
                   "Quartet: QuEST forward, rotated MXFP4 backward with SR"),
    "quartet RTN": (["--model.recipe", "mxfp4_quartet", "--model.recipe_overrides", NO_SR_BACKWARD] + ALL_BLOCKS,
                    "Quartet, backward rounded to nearest (its v4 revision)"),
}


def prepare_tokens(binary: str, out: str) -> str:
    d = os.path.join(out, f"tokens_bpe{BPE_VOCAB}")
    if not os.path.isfile(os.path.join(d, "val.bin")):
        subprocess.run([binary, "prepare", "--input", os.path.join(ROOT, "data", "kjv.txt"), "--out", d,
                        "--tokenizer", "bpe", "--vocab", str(BPE_VOCAB)], check=True, capture_output=True)
    return d


def command(binary: str, tokens: str, run_dir: str, size: str, recipe: str, seed: int) -> list[str]:
    s = SIZES[size]
    steps, eval_every = s["steps"], max(1, s["steps"] // 10)
    return ([binary, "--config", CONFIG, "--parallel.dp", "1",
             "--data.train", os.path.join(tokens, "train.bin"), "--data.val", os.path.join(tokens, "val.bin"),
             "--model.vocab", str(BPE_VOCAB), "--train.out_dir", run_dir, "--train.threads", "1",
             "--train.steps", str(steps), "--train.eval_every", str(eval_every), "--train.eval_batches", "16",
             "--train.sample_tokens", "0", "--checkpoint.every", "0", "--optim.lr", s["lr"],
             "--optim.warmup", s["warmup"], "--model.seed", str(seed), "--data.seed", str(seed)]
            + s["args"] + RECIPES[recipe][0])


def run_dir_name(size: str, recipe: str, seed: int) -> str:
    return f"{size}-{recipe.replace(' ', '_')}-s{seed}"


def load_records(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def train(cmd: list[str], run_dir: str) -> str:
    """Runs `cmd` unless run_dir holds a finished run of the same command; returns what happened."""
    stamp = os.path.join(run_dir, "study_command.json")
    if os.path.isfile(stamp):
        with open(stamp) as f:
            same = json.load(f) == cmd
        if same and any(r.get("final") for r in load_records(run_dir)):
            return "kept"
    # A run of another command (or an interrupted one) may have left records and checkpoints: start clean, so the
    # report never mixes two runs' records.
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if r.returncode != 0:
        raise RuntimeError(f"nibble-train failed in {run_dir}:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    with open(stamp, "w") as f:
        json.dump(cmd, f)
    return f"{time.time() - t0:.0f} s"


def summarize(run_dir: str) -> dict:
    recs = load_records(run_dir)
    steps = [r for r in recs if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in recs if "eval_loss" in r]
    memory = next(r["memory"] for r in recs if "memory" in r)
    # Steady-state throughput: the median over the steps after the first five (allocator warm-up).
    tps = statistics.median(r["tokens_per_s"] for r in steps[5:] or steps)
    return {"final": [r for r in recs if r.get("final")][-1]["eval_loss"], "evals": evals,
            "train": [(r["step"], r["loss"]) for r in steps], "tokens_per_s": tps, "peak_bytes": memory["peak"]}


def mean_spread(xs: list[float]) -> tuple[float, float]:
    """Mean and half the range over seeds (with two seeds: the distance of each from the mean)."""
    return statistics.mean(xs), (max(xs) - min(xs)) / 2


def ema(values: list[float], alpha: float = 0.05) -> list[float]:
    out, acc = [], values[0]
    for v in values:
        acc = alpha * v + (1 - alpha) * acc
        out.append(acc)
    return out


def plot_size(size: str, results: dict[str, list[dict]], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax_train, ax_gap) = plt.subplots(1, 2, figsize=(14, 5.5))
    colors = plt.get_cmap("tab20").colors
    ref = [dict(r["evals"]) for r in results["bf16"]]
    lows, highs = [], []
    for i, (name, runs) in enumerate(results.items()):
        steps = [s for s, _ in runs[0]["train"]]
        alpha = min(0.3, 20 / len(steps))  # about 20 steps of smoothing at any length
        first = steps[len(steps) // 5]
        smooth = ema([statistics.mean(r["train"][k][1] for r in runs) for k in range(len(steps))], alpha)
        ax_train.plot(steps, smooth, color=colors[i % 20], label=name, lw=1.2)
        lows.append(min(smooth[len(steps) // 5:]))
        highs.append(max(smooth[len(steps) // 5:]))
        eval_steps = [s for s, _ in runs[0]["evals"]]
        # Gap per seed against the bf16 run of the same seed (same data order, same initial weights).
        gaps = [statistics.mean(100 * (dict(r["evals"])[s] - ref[j][s]) / ref[j][s] for j, r in enumerate(runs))
                for s in eval_steps]
        ax_gap.plot(eval_steps, gaps, marker="o", color=colors[i % 20], label=name, lw=1.2)
    ax_train.set(xlabel="step", ylabel=f"train loss (EMA {alpha:.2f}, mean over seeds)",
                 title=f"{size}: training loss after the first 20% of the steps")
    ax_train.set_xlim(left=first)
    ax_train.set_ylim(min(lows) - 0.02, max(highs) + 0.02)
    ax_train.legend(fontsize=7, ncol=2)
    ax_gap.axhline(0, color="black", lw=0.8)
    ax_gap.set(xlabel="step", ylabel="held-out loss gap to bf16 (%, mean over seeds)",
               title=f"{size}: gap to bf16 on held-out text")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def paired_gaps(results: dict[str, list[dict]], a: str, b: str) -> list[float]:
    """100 * (loss_a - loss_b) / loss_b per seed: both runs of a seed saw the same batches from the same weights,
    so the seed's own difference is the measurement and the seeds are its repeats."""
    return [100 * (ra["final"] - rb["final"]) / rb["final"] for ra, rb in zip(results[a], results[b])]


# (published claim, run a, run b, the sign of 100 * (a - b) / b the claim predicts; 0: |gap| <= 0.25%)
CLAIMS = [
    ("DeepSeek-V3: FP8 block scaling within 0.25% of BF16", "fp8_block", "bf16", 0),
    ("NVFP4 paper: NVFP4 above FP8 (by ~1.5% at 12B)", "nvfp4", "fp8_current", +1),
    ("NVFP4 paper: SR on gradients matters (RTN worse)", "nvfp4 no SR", "nvfp4", +1),
    ("NVFP4 paper: BF16 last blocks matter", "nvfp4 all blocks", "nvfp4", +1),
    ("NVFP4 paper: RHT on wgrad helps (at scale)", "nvfp4 no RHT", "nvfp4", +1),
    ("NVFP4 paper: 2-D weight scales help", "nvfp4 1-D W", "nvfp4", +1),
    ("NVFP4 paper: NVFP4 better than MXFP4", "nvfp4", "mxfp4", -1),
    ("Quartet v4: round-to-nearest backward better than SR", "quartet RTN", "quartet SR", -1),
]


def comparisons(results: dict[str, list[dict]]) -> list[tuple[str, str, str]]:
    """(published claim, this size's per-seed gaps, verdict). A claim holds here only if every seed shows it."""
    out = []
    for claim, a, b, sign in CLAIMS:
        if a not in results or b not in results:
            continue
        gaps = paired_gaps(results, a, b)
        shown = f"{a} vs {b}: " + ", ".join(f"{g:+.2f}%" for g in gaps)
        if sign == 0:
            if all(abs(g) <= 0.25 for g in gaps):
                verdict = "yes, every seed"
            elif all(g < -0.25 for g in gaps) or all(g > 0.25 for g in gaps):
                verdict = (f"no: {'lower' if gaps[0] < 0 else 'higher'} loss than {b} by more than 0.25% on every "
                           "seed")
            else:
                verdict = "seeds disagree"
        elif all(g * sign > 0 for g in gaps):
            verdict = "yes, every seed"
        elif all(g * sign < 0 for g in gaps):
            verdict = "no, every seed shows the opposite"
        else:
            verdict = "seeds disagree: cannot order them"
        out.append((claim, shown, verdict))
    return out


def report(out: str, seeds: list[int], sizes: list[str], by_size: dict[str, list[str]], docs: str, images: str,
           wall_lines: list[str]) -> None:
    lines = ["# Recipe study (issue 18 item 5)", "",
             "Generated by `benchmarks/study_recipes.py` (do not edit by hand: rerun it, or `--report-only` to "
             "rebuild this page from the runs on disk). The KJV Bible, BPE tokenizer with "
             f"{BPE_VOCAB} tokens trained on the training split (`nibble-train prepare --tokenizer bpe`), held-out "
             "loss on 16 fixed batches of the last 2% of the text. Seeds " + ", ".join(map(str, seeds)) +
             " set both `model.seed` (initial weights, stochastic rounding) and `data.seed` (batch order); every "
             "recipe sees the same batches and starts from the same weights for a given seed. One thread per "
             "run, two runs at a time on a 2-core machine (tokens/s is per run while the other one runs). "
             "Memory is the peak of torch's CPU allocations in the first two steps (the trainer's memory "
             "account, not RSS). The LM head and embedding are high precision in every run.", ""]
    if wall_lines:
        lines += [" ".join(wall_lines), ""]
    with open(CONFIG, "rb") as f:
        config = tomllib.load(f)
    tokens_per_step = config["train"]["global_batch"] * config["model"]["seq_len"]
    flattened, verdicts_by_size = {}, {}
    for size in sizes:
        s, recipes = SIZES[size], by_size[size]
        results = {name: [summarize(os.path.join(out, run_dir_name(size, name, seed))) for seed in seeds]
                   for name in recipes}
        params = model_parameters(os.path.join(out, run_dir_name(size, "bf16", seeds[0])))
        tokens = s["steps"] * tokens_per_step
        lines += [f"## {size} model: {params / 1e6:.2f}M parameters, {s['steps']} steps, {tokens / 1e3:.0f}K "
                  f"tokens, lr {s['lr']} cosine", ""]
        table = {}
        bf16_mean = statistics.mean(r["final"] for r in results["bf16"])
        lines += ["| recipe | held-out loss (mean ± half range) | gap to bf16 | tokens/s | peak memory | what it is |",
                  "|---|---|---|---|---|---|"]
        for name, runs in results.items():
            mean, spread = mean_spread([r["final"] for r in runs])
            table[name] = {"mean": mean, "spread": spread}
            tps = statistics.mean(r["tokens_per_s"] for r in runs)
            mib = runs[0]["peak_bytes"] / 2**20
            gap = "" if name == "bf16" else f"{100 * (mean - bf16_mean) / bf16_mean:+.2f}%"
            lines.append(f"| {name} | {mean:.4f} ± {spread:.4f} | {gap} | {tps:.0f} | {mib:.1f} MiB | "
                         f"{RECIPES[name][1]} |")
        left_out = [r for r in RECIPES if r not in recipes]
        if left_out:
            lines += ["", f"At this size the hour holds {len(recipes)} of the {len(RECIPES)} recipes; "
                      f"`--all-recipes` also runs {', '.join(left_out)}."]
        eval_steps = [st for st, _ in results["bf16"][0]["evals"]]
        evals = [statistics.mean(dict(r["evals"])[st] for r in results["bf16"]) for st in eval_steps]
        if len(evals) >= 2:
            drop, flattened[size] = flattening(evals)
            flat = (f"it has flattened (under {FLAT_PERCENT:g}% over the last tenth of the steps)" if flattened[size]
                    else "**it has not flattened** (see the limits below)")
            lines += ["", f"bf16's held-out loss from step {eval_steps[-2]} to {eval_steps[-1]}: {evals[-2]:.4f} -> "
                      f"{evals[-1]:.4f} ({drop:+.2f}%): {flat}. Largest half range over seeds in this table: "
                      f"{max(r['spread'] for r in table.values()):.4f}."]
        png = f"study_{size}.png"
        plot_size(size, results, os.path.join(images, png))
        rel = os.path.relpath(os.path.join(images, png), os.path.dirname(docs))
        lines += ["", f"![{size} loss curves]({rel})", ""]
        rows = comparisons(results)
        verdicts_by_size[size] = {claim: verdict for claim, _, verdict in rows}
        if rows:
            lines += ["| published | here (held-out loss gap per seed) | agrees? |", "|---|---|---|"]
            lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
            lines += ["", "Each seed's gap compares two runs that saw the same batches from the same initial weights; "
                      "a claim counts as shown only when every seed shows it. Orderings are compared by the sign of each gap, not "
                      "its size (the published sizes belong to billions of parameters and tokens).", ""]
    lines += across_sizes(verdicts_by_size)
    lines += limits(flattened)
    with open(docs, "w") as f:
        f.write("\n".join(lines) + "\n")


def across_sizes(verdicts_by_size: dict[str, dict[str, str]]) -> list[str]:
    """The closing table of the published claims: each size's verdict and whether the claim holds at every size
    (the limits below say why only those mean much). Only claims that every size could test are listed."""
    sizes = list(verdicts_by_size)
    claims = [c for c, *_ in CLAIMS if all(c in verdicts_by_size[s] for s in sizes)]
    if len(sizes) < 2 or not claims:
        return []
    lines = ["## The published claims at every size", "",
             "| published | " + " | ".join(sizes) + " | holds at every size? |",
             "|---|" + "---|" * len(sizes) + "---|"]
    for claim in claims:
        verdicts = [verdicts_by_size[s][claim] for s in sizes]
        held = all(v == "yes, every seed" for v in verdicts)
        lines.append(f"| {claim} | " + " | ".join(verdicts) + f" | {'**yes**' if held else 'no'} |")
    return lines + [""]


# A curve has flattened when the held-out loss falls by less than this over the last tenth of the steps.
FLAT_PERCENT = 1.0


def flattening(evals: list[float]) -> tuple[float, bool]:
    """(change in % from the second-last to the last held-out loss, whether that is a flattened curve). The study
    measures held-out loss at every tenth of the steps, so the last interval is the last tenth."""
    drop = 100 * (evals[-1] - evals[-2]) / evals[-2]
    return drop, abs(drop) < FLAT_PERCENT


def limits(flattened: dict[str, bool]) -> list[str]:
    """The closing section; its training-length bullet says which sizes' bf16 curves flattened."""
    flat = [size for size, f in flattened.items() if f]
    steep = [size for size, f in flattened.items() if not f]
    if steep:
        length = (f"bf16's curve had not flattened at {', '.join(steep)}: that table compares runs still descending, "
                  "where quantization noise acts like extra gradient noise, not the converged losses the papers "
                  "compare.")
    else:
        length = (f"bf16's held-out loss flattened at every size by this study's rule (under {FLAT_PERCENT:g}% over "
                  "the last tenth), but its training loss is still falling (the plots) and the cosine schedule ends "
                  "at a tenth of its peak learning rate: a longer run would lower every loss, and gaps can change "
                  "sign with training length (the papers measure theirs after 10^11 tokens and more).")
    return ([LIMITS[0], LIMITS[1], LIMITS[2], f"- **Training length.** {length}"] + LIMITS[3:])


LIMITS = [
    "## What a small model on a CPU cannot show",
    "",
    "- **Scale.** The published gaps come from 1B-12B models trained on 10^11-10^13 tokens; here 1M and 10M "
    "parameters see 1-2·10^6 tokens. The effects those papers measure (outlier features that grow with width "
    "and training length, which RHT and 2-D weight scales exist to tame; the slow drift that BF16 last blocks and "
    "stochastic rounding prevent over 10^12 tokens) mostly appear late and large. A 0.1% effect at 12B is far below "
    "this study's seed noise.",
    "- **Emulation, not hardware.** Every quantized GEMM here is CPU emulation with the exact formats of "
    "NUMERICS.md (decode to BF16-exact values, FP32 sums), so the losses are what the formats do; the tokens/s "
    "column measures the emulation's cost on this CPU, not the speed-up FP8/FP4 tensor cores give (on a GPU the "
    "low-precision recipes are faster, here they are slower than bf16).",
    "- **Two seeds.** \"Every seed\" means both: two seeds agreeing in sign happens by chance one time in four "
    "when the true difference is zero, so a \"yes\" here is weak evidence, and only a claim that holds at both sizes "
    "means much.",
    "- **Memory.** Saved activations and weight caches shrink under the quantized recipes, but at these sizes the "
    "FP32 master weights, gradients and Adam states dominate the peak.",
    "",
]


def size_recipes(size: str, recipes: list[str], all_recipes: bool) -> list[str]:
    """The recipes a size runs: SIZES' list (in the order of `recipes`) unless all_recipes."""
    keep = SIZES[size]["recipes"]
    return [r for r in recipes if all_recipes or keep is None or r in keep]


def walls(out: str, added_runs: list[str], parallel: int) -> list[str]:
    """The report's wall-time sentences, from the records the runs left in `out`. `added_runs` are the run
    directories `--all-recipes` adds to a plain study; when they were trained over more than one invocation (an
    interrupted one resumes), the last invocation's wall time covers only some of them, so the sentence also gives
    what all of their steps took, from each step's own timing."""
    def record(name: str) -> dict | None:
        path = os.path.join(out, name)
        if not os.path.isfile(path):
            return None
        with open(path) as f:
            return json.load(f)
    lines = []
    plain = record("study_wall.json")
    if plain:
        lines.append(f"This study's last full run took {plain['wall_s'] / 60:.1f} minutes of wall time for "
                     f"{plain['jobs']} runs.")
    added = record("study_wall_all_recipes.json")
    if added and added["jobs"] == len(added_runs):
        lines.append(f"`--all-recipes` after it took {added['wall_s'] / 60:.1f} minutes of wall time for the "
                     f"{added['jobs']} runs it adds.")
    elif added and all(os.path.isfile(os.path.join(out, d, "metrics.jsonl")) for d in added_runs):
        step_minutes = sum(r["ms_per_step"] for d in added_runs for r in load_records(os.path.join(out, d))
                           if "ms_per_step" in r) / 60000
        lines.append(f"The {len(added_runs)} runs `--all-recipes` adds were trained over more than one invocation "
                     f"(the last took {added['wall_s'] / 60:.1f} minutes for {added['jobs']} of them); their training "
                     f"steps alone took {step_minutes:.0f} run-minutes, about {step_minutes / parallel:.0f} minutes "
                     f"of wall time {parallel} at a time.")
    return lines


def model_parameters(run_dir: str) -> int:
    """Parameters from the run's memory account: FP32 parameters are 4 bytes each (one rank)."""
    memory = next(r["memory"] for r in load_records(run_dir) if "memory" in r)
    return memory["parameters"] // 4


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "nibble-train"))
    ap.add_argument("--out", default=os.path.join(ROOT, "runs", "study"))
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--sizes", default="default,10m")
    ap.add_argument("--only", default="", help="comma-separated recipe names (default: all)")
    ap.add_argument("--all-recipes", action="store_true",
                    help="every recipe at every size (beyond the hour: the ten left out at 10M add ~2 hours here)")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="30/10 steps into --out/smoke, report there")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    sizes = a.sizes.split(",")
    recipes = [r for r in RECIPES if not a.only or r in a.only.split(",")]
    if "bf16" not in recipes:
        recipes.insert(0, "bf16")
    by_size = {size: size_recipes(size, recipes, a.all_recipes) for size in sizes}
    docs, images, out = os.path.join(ROOT, "docs", "RESULTS.md"), os.path.join(ROOT, "docs", "images"), a.out
    if a.smoke:
        out = os.path.join(a.out, "smoke")
        docs, images = os.path.join(out, "RESULTS.md"), out
        SIZES["default"].update(steps=30, warmup="5")
        SIZES["10m"].update(steps=10, warmup="2")
    os.makedirs(out, exist_ok=True)
    tokens = prepare_tokens(a.binary, a.out)
    wall = None
    if not a.report_only:
        # Longest runs first, so the two workers finish together.
        jobs = [(size, name, seed) for size in reversed(sizes) for name in by_size[size] for seed in seeds]
        t0 = time.time()
        with ThreadPoolExecutor(a.parallel) as pool:
            futures = []
            for size, name, seed in jobs:
                d = os.path.join(out, run_dir_name(size, name, seed))
                cmd = command(a.binary, tokens, d, size, name, seed)
                futures.append(((size, name, seed), pool.submit(train, cmd, d)))
            outcomes = []
            for (size, name, seed), f in futures:
                outcomes.append(f.result())
                print(f"{size:8s} {name:18s} seed {seed}: {outcomes[-1]}", flush=True)
        wall = time.time() - t0
        print(f"all runs: {wall / 60:.1f} min", flush=True)
        # A whole study from scratch: its wall time is the one to report. --all-recipes after a plain study ran
        # only the runs the plain one left out: their time is reported beside it.
        name = "study_wall.json" if "kept" not in outcomes else "study_wall_all_recipes.json"
        if "kept" not in outcomes or a.all_recipes:
            with open(os.path.join(out, name), "w") as f:
                json.dump({"wall_s": wall, "jobs": sum(o != "kept" for o in outcomes), "parallel": a.parallel,
                           "all_recipes": a.all_recipes}, f)
    added_runs = [run_dir_name(size, name, seed) for size in sizes for name in size_recipes(size, recipes, True)
                  if name not in size_recipes(size, recipes, False) for seed in seeds]
    report(out, seeds, sizes, by_size, docs, images, walls(out, added_runs, a.parallel))
    print(f"wrote {docs}")


if __name__ == "__main__":
    main()
