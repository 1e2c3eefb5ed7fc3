"""The pipeline bubble of the real trainer: nibble-train runs a GPT over pp = 2 ranks with each schedule and
prints the median measured bubble -- the busiest rank's idle over its compute, (T - C_max) / C_max, the
schedule checker's definition -- which this script sets beside Megatron's (p-1)/(v*m), with the stage
imbalance (busiest / mean compute - 1) that the formula leaves out. A benchmark, not a test: it is a timing.

    python benchmarks/bench_train_bubble.py [--pp 2] [--hidden 256] [--layers 8] [--micro-batches 8]

pp = 2 by default: each rank needs a core of its own, or ranks time-share and idle time measures the operating
system's scheduler, not the pipeline (the development machine has 2 cores; --pp 4 wants 4). The layer split is
even; the last stage also holds the final norm, LM head and loss, which is the imbalance printed
(parallel.pp_layers moves layers to even it out).
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_pml="ob1",
           OMPI_MCA_mpi_yield_when_idle="1", OMP_NUM_THREADS="1")
SUMMARY = re.compile(r"measured bubble ([0-9.]+) = .*?; \(p-1\)/\(v\*m\) = ([0-9.]+) .*?stage imbalance ([0-9.]+)"
                     r".*?all ranks' idle / compute ([0-9.]+)")
SCHEDULES = [("gpipe", 1), ("1f1b", 1), ("interleaved", 2)]


def prepare_tokens(binary, work):
    corpus = os.path.join(ROOT, "data", "kjv.txt")
    if not os.path.isfile(corpus):
        corpus = os.path.join(work, "corpus.txt")
        with open(corpus, "w") as f:
            f.write("the quick brown fox jumps over the lazy dog. " * 4000)
    subprocess.run([binary, "prepare", "--input", corpus, "--out", work], check=True, capture_output=True)


def measure(binary, work, args, schedule, v):
    m = args.micro_batches
    cmd = [shutil.which("mpirun") or "mpirun", "-np", str(args.pp), "--oversubscribe", "--bind-to", "none", binary,
           "--config", os.path.join(ROOT, "examples", "configs", "tiny.toml"),
           "--data.train", os.path.join(work, "train.bin"), "--data.val", os.path.join(work, "val.bin"),
           "--train.out_dir", os.path.join(work, f"run_{schedule}"), "--train.threads", "1",
           "--model.hidden", str(args.hidden), "--model.ffn_hidden", str(4 * args.hidden),
           "--model.heads", str(max(1, args.hidden // 64)), "--model.layers", str(args.layers),
           "--model.seq_len", str(args.seq_len), "--model.recipe", args.recipe,
           "--train.steps", str(args.steps), "--train.global_batch", str(m), "--train.micro_batch", "1",
           "--train.sample_tokens", "0", "--train.eval_batches", "1",
           "--parallel.pp", str(args.pp), "--parallel.pp_schedule", schedule, "--parallel.virtual_stages", str(v)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=1800)
    found = SUMMARY.search(r.stdout)
    if r.returncode != 0 or not found:
        sys.exit(f"{schedule}: nibble-train failed (exit {r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return [float(g) for g in found.groups()]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--pp", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--micro-batches", type=int, default=8)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--recipe", default="bf16")
    args = ap.parse_args()
    binary = os.path.join(args.build, "nibble-train")
    if args.pp > len(os.sched_getaffinity(0)):
        print(f"warning: pp={args.pp} ranks on {len(os.sched_getaffinity(0))} cores time-share; the idle measured "
              "is the scheduler's, not the pipeline's")
    print(f"nibble-train, pp={args.pp} on {args.pp} ranks: {args.layers} layers, hidden {args.hidden}, "
          f"seq {args.seq_len}, {args.micro_batches} micro-batches of 1, recipe {args.recipe}; "
          f"median of {args.steps} steps")
    with tempfile.TemporaryDirectory() as work:
        prepare_tokens(binary, work)
        for schedule, v in SCHEDULES:
            bubble, formula, imbalance, idle = measure(binary, work, args, schedule, v)
            ratio = bubble / formula
            verdict = "within 10%" if abs(ratio - 1) <= 0.1 else "NOT within 10%"
            print(f"{schedule:<11} v={v}: measured bubble {bubble:.3f} | (p-1)/(v*m) {formula:.3f} | "
                  f"measured/formula {ratio:.2f}x ({verdict}) | stage imbalance {imbalance:.3f} | "
                  f"all ranks' idle {idle:.3f}")


if __name__ == "__main__":
    main()
