"""nibble-train at the benchmarks' model sizes (issue 17's configurations), shared by bench_memory.py and
bench_train_step.py: the token files, and one run's metrics records."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# name -> (hidden, layers, heads, ffn); vocab 256 (bytes), seq 256, batch 8.
SIZES = {"small": (512, 4, 8, 1376), "medium": (768, 7, 12, 2048)}
VOCAB, SEQ, BATCH = 256, 256, 8


def tokens_dir(binary: str, work: str) -> str:
    """data/tokens when the set-up made it, else the KJV tokenized into `work`."""
    d = os.path.join(ROOT, "data", "tokens")
    if os.path.isfile(os.path.join(d, "train.bin")):
        return d
    d = os.path.join(work, "tokens")
    subprocess.run([binary, "prepare", "--input", os.path.join(ROOT, "data", "kjv.txt"), "--out", d],
                   check=True, capture_output=True)
    return d


# Open MPI as root, shared memory only, ranks that yield while they wait (more ranks than cores here).
MPI_ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_pml="ob1",
               OMPI_MCA_mpi_yield_when_idle="1", OMP_NUM_THREADS="1")


def run_nibble_train(binary: str, tokens: str, out: str, size: str, steps: int, threads: int,
                     overrides: list[str], ranks: int = 1) -> list[dict]:
    """`steps` steps of the tiny config resized to SIZES[size], one micro-batch per step (overrides may say
    otherwise: they come last), no eval or sample; `ranks` > 1 runs it under mpirun. Returns rank 0's
    metrics.jsonl records (exits naming the failure if nibble-train fails)."""
    hidden, layers, heads, ffn = SIZES[size]
    cmd = [binary, "--config", os.path.join(ROOT, "examples", "configs", "tiny.toml"),
           "--data.train", os.path.join(tokens, "train.bin"), "--data.val", os.path.join(tokens, "val.bin"),
           "--train.out_dir", out, "--train.threads", str(threads), "--model.vocab", str(VOCAB),
           "--model.hidden", str(hidden), "--model.layers", str(layers), "--model.heads", str(heads),
           "--model.ffn_hidden", str(ffn), "--model.seq_len", str(SEQ), "--train.global_batch", str(BATCH),
           "--train.micro_batch", str(BATCH), "--train.steps", str(steps), "--optim.warmup", "0",
           "--train.sample_tokens", "0", "--train.eval_batches", "1", "--train.eval_every", "0",
           "--checkpoint.every", "0"] + overrides
    if ranks > 1:
        cmd = [shutil.which("mpirun") or "mpirun", "-np", str(ranks), "--oversubscribe", "--bind-to", "none"] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True, env=MPI_ENV if ranks > 1 else None)
    if r.returncode != 0:
        sys.exit(f"nibble-train failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]
