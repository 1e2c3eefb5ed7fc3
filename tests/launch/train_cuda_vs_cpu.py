"""nibble-train on the GPU against nibble-train on the CPU (the reference), issue 15's trainer check.

For each recipe: the tiny config for 20 steps with train.device = "cpu" and "cuda", then the per-step training
loss compared:
bf16 within 1e-3 absolute, quantized recipes within 0.5% relative. The GPU sums in other orders (cuBLAS, the
device's gradient norm), so the runs are close, not equal. A checkpoint written on the GPU is resumed on the CPU
for one more step, which must succeed and print a finite loss; dp, tp, pp and cp = 2 with both ranks on the one
GPU, and dp = 2 with ZeRO-1, stay within 1e-3 of the one-rank GPU run (bf16).

Standard library only (the GPU machine's Python needs nothing but itself). Exits 77 -- a CTest skip, never a
pass -- when nibble-train reports that it cannot use a GPU here (no GPU visible), unless NIBBLE_REQUIRE_GPU=1.

usage: train_cuda_vs_cpu.py NIBBLE_TRAIN CONFIG CORPUS WORK_DIR [MPIRUN]
"""
import json
import math
import os
import shutil
import subprocess
import sys

STEPS = 20


def run(cmd, env=None):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    return r.returncode, r.stdout + r.stderr


def losses(out_dir):
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r["loss"] for r in rows if "loss" in r]


def main():
    train, config, corpus, work = sys.argv[1:5]
    mpirun = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] else None
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    rc, log = run([train, "prepare", "--input", corpus, "--out", os.path.join(work, "tokens")])
    if rc != 0:
        print(log)
        return 1
    base = [train, "--config", config, "--data.train", os.path.join(work, "tokens", "train.bin"), "--data.val",
            os.path.join(work, "tokens", "val.bin"), "--train.sample_tokens", "0"]
    steps = ["--train.steps", str(STEPS), "--checkpoint.every", "0"]
    failures = []
    for recipe in ["bf16", "fp8_current", "mxfp8", "nvfp4", "mxfp4"]:
        runs = {}
        for device in ["cuda", "cpu"]:  # cuda first: a machine without a GPU skips at once
            out = os.path.join(work, f"{recipe}_{device}")
            rc, log = run(base + steps + ["--model.recipe", recipe, "--train.device", device, "--train.out_dir", out])
            if rc != 0 and device == "cuda" and "sees no CUDA GPU" in log and os.environ.get("NIBBLE_REQUIRE_GPU") != "1":
                print("SKIPPED: nibble-train sees no CUDA GPU here:\n" + log[-400:])
                return 77
            if rc != 0:
                failures.append(f"{recipe} on {device}: exit {rc}\n{log[-2000:]}")
                break
            runs[device] = losses(out)
            if device == "cuda" and "device: cuda" not in log:
                failures.append(f"{recipe}: asked for cuda, the trainer did not say it trains there:\n{log[:1500]}")
        if len(runs) != 2:
            continue
        cpu, gpu = runs["cpu"], runs["cuda"]
        worst = max(abs(a - b) if recipe == "bf16" else abs(a - b) / abs(a) for a, b in zip(cpu, gpu))
        limit = 1e-3 if recipe == "bf16" else 5e-3
        verdict = "ok" if len(cpu) == len(gpu) == STEPS and worst <= limit else "FAILED"
        print(f"{recipe:12s} {STEPS} steps: worst per-step loss gap {worst:.2e} (limit {limit:g}) {verdict}; "
              f"last loss cpu {cpu[-1]:.4f} cuda {gpu[-1]:.4f}")
        if verdict != "ok":
            failures.append(f"{recipe}: cpu {cpu} vs cuda {gpu}")
    # A GPU checkpoint resumed on the CPU: one more step from it.
    out = os.path.join(work, "resume")
    rc, log = run(base + ["--train.device", "cuda", "--train.out_dir", out, "--train.steps", "4",
                          "--checkpoint.every", "4"])
    if rc == 0:
        rc, log = run(base + ["--train.device", "cpu", "--train.out_dir", out, "--train.steps", "5",
                              "--checkpoint.resume", "true"])
    resumed = losses(out)[-1] if rc == 0 else float("nan")
    print(f"checkpoint written on cuda, resumed on cpu: exit {rc}, step-5 loss {resumed:.4f}")
    if rc != 0 or not math.isfinite(resumed):
        failures.append("GPU checkpoint resumed on the CPU:\n" + log[-2000:])
    # dp, tp, pp and cp = 2 with both ranks on the one GPU (NCCL refuses two ranks on one device, so every group
    # stages CUDA tensors through host memory over MPI), against the one-rank GPU run of the same recipe: the
    # same model and data, so the losses stay close.
    layouts = (["--parallel.dp", "2"], ["--parallel.tp", "2"], ["--parallel.pp", "2"], ["--parallel.cp", "2"],
               ["--parallel.dp", "2", "--optim.zero", "1"])
    for layout in layouts if mpirun else ():
        name = "".join(layout).replace("--parallel.", "").replace("--optim.", "_")
        out = os.path.join(work, name)
        rc, log = run([mpirun, "-np", "2", "--oversubscribe", "--bind-to", "none"] + base + steps +
                      ["--model.recipe", "bf16", "--train.device", "cuda", "--train.out_dir", out] + layout)
        got = losses(out) if rc == 0 else []
        one = losses(os.path.join(work, "bf16_cuda"))
        worst = max((abs(a - b) for a, b in zip(one, got)), default=float("inf"))
        print(f"{name} on one GPU: exit {rc}, {len(got)} steps, worst loss gap to one rank {worst:.2e}")
        if rc != 0 or len(got) != STEPS or worst > 1e-3:
            failures.append(f"{name} on one GPU:\n" + log[-2000:])
        elif "collectives of CUDA tensors:" not in log:
            failures.append(f"{name} on one GPU: no start-up line naming the collectives' backends:\n" + log[:1500])
    for f in failures:
        print("FAILED:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
