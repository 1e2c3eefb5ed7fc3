"""Calibrates nibble-plan on this CPU machine: writes a cluster description (the format of plan/clusters/*.toml)
whose rates are measured here as nibble achieves them, so `nibble-plan predict` can be checked against
nibble-train's own step (benchmarks/bench_plan_calibration.py, docs/PLAN.md "Calibration on this machine").

    PYTHONPATH=build/python_package .venv/bin/python plan/calibrate.py --out plan/clusters/this_machine.toml

Why Python and not a nibble-plan subcommand: nibble-plan is torch-free (it plans clusters from a laptop), and
the GEMM rate that matters here is nibble's own CPU GEMM path per recipe, which needs torch; the Python package
runs that path (nibble.nn.Linear) and nibble's Communicator (nibble.parallel) with no new binary.

What it measures, each with one thread in one process (a rank of nibble-train with --train.threads 1):
  - dense_tflops.<format>: nibble.nn.Linear forward + backward (fprop, dgrad, wgrad: 6 T K N FLOPs) at the
    shapes of a model's Linears (--gemm; summed FLOPs over summed median times) in the recipe of that format
    (fp8: fp8_current), quantizing its activation operands included (its weights' copies are cached after the
    warm-up) -- on a CPU every format is decoded to BF16, so the rate per format is the emulation's and not a
    tensor-core peak;
  - memory.bandwidth_gbps: the bytes per second torch's element-wise CPU kernels move (a BF16 add, 3 x 2 bytes per
    element), what the planner's other memory-bound terms (embedding, logits, the optimizer) are charged at;
  - cpu.attention_tflops: the attention core as nibble runs it (torch SDPA, FP32, causal; core/model/gpt.cpp),
    forward + backward at one micro-batch of --model, over the FLOPs the planner charges for it;
  - cpu.elementwise_gbps.<format>: a layer's norms, SwiGLU and residual adds as nibble runs them in that slot's
    recipe (FP32, autograd, COAT's compression where the recipe has it), forward + backward at --model, over the
    bytes the planner's per-layer memory-bound term charges for them on a calibrated CPU, which the planner
    itself counts (`nibble-plan elementwise-bytes`, --plan), so the two cannot drift apart;
  - intra_node: nibble.parallel all-reduce, all-gather and send/recv over --mpi-ranks processes under mpirun at
    several sizes: one latency and one bandwidth fitted to the planner's ring model (plan/collectives.cpp: e.g.
    all-gather t = (n-1) latency + (n-1)/n bytes / bandwidth) by least relative error over the collectives that
    only move data (all-gather, send/recv), then the rate at which a rank sums what it receives (reduce_gbps:
    MPI reduces in software, on the same cores) from what the all-reduces take beyond that model; each
    collective printed beside the fit.
  - cpu.layer_remainder_ns_per_token.<format>: what the terms above leave out of a real step (RoPE, the QKV
    permutes and copies, autograd's per-op work, allocation): nibble-train itself, one rank, one thread, at
    --model with --remainder-layers layers (every one in the slot's recipe) and one micro-batch per step, minus
    `nibble-plan predict` of that run on the description measured so far, per layer and token (0 where the
    prediction is not below the run). A different depth from benchmarks/bench_plan_calibration.py's model, so
    that its one-rank rows stay predictions;
  - cores_per_node: the same BF16 Linear in one process per core at once, their rates summed over one
    process's alone: the cores this machine gives a job now (fewer than it has while others load it).
    nibble-plan gives each of n ranks min(1, cores_per_node / n) of one core's rates: more ranks than cores
    time-share (docs/PLAN.md says where that is too simple).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

# The format slots of a cluster description and the recipe whose Linear measures each (plan/recipe_costs.cpp
# cpu_slot maps a recipe's operands back to these slots).
SLOTS = [("bf16", "bf16"), ("fp8", "fp8_current"), ("mxfp8", "mxfp8"), ("nvfp4", "nvfp4"), ("mxfp4", "mxfp4")]
MPI_ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_pml="ob1",
               OMPI_MCA_mpi_yield_when_idle="1", OMP_NUM_THREADS="1")


def median_seconds(step, repeats: int) -> float:
    step()  # warm-up: allocator, weight quantization cache
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def linear_tflops(recipe: str, shapes: list[tuple[int, int, int]], repeats: int) -> float:
    """fwd+bwd FLOPs of every (tokens, in, out) Linear over their summed median times: one rate for the mix."""
    import torch
    import nibble
    flops = seconds = 0.0
    for tokens, k, n in shapes:
        lin = nibble.nn.Linear(k, n, recipe=recipe)
        x = torch.randn(tokens, k).requires_grad_()
        dy = torch.randn(tokens, n)

        def step():
            lin.zero_grad(set_to_none=True)
            x.grad = None
            lin(x).backward(dy)
        flops += 6.0 * tokens * k * n
        seconds += median_seconds(step, repeats)
    return flops / seconds / 1e12


def parse_shapes(text: str) -> list[tuple[int, int, int]]:
    try:
        shapes = [tuple(int(v) for v in item.split(",")) for item in text.split(";")]
    except ValueError:
        shapes = []
    if not shapes or any(len(s) != 3 or min(s) < 1 for s in shapes):
        raise SystemExit(f"calibrate: --gemm '{text}' must be tokens,in,out[;tokens,in,out...] of positive integers")
    return shapes


def elementwise_gbps(elements: int, repeats: int) -> float:
    import torch
    a = torch.randn(elements).to(torch.bfloat16)
    b = torch.randn(elements).to(torch.bfloat16)
    c = torch.empty_like(a)
    return 3 * 2 * elements / median_seconds(lambda: torch.add(a, b, out=c), repeats) / 1e9


def parse_model(text: str) -> dict:
    try:
        b, s, h, heads, f = (int(v) for v in text.split(","))
    except ValueError:
        raise SystemExit(f"calibrate: --model '{text}' must be micro_batch,seq,hidden,heads,ffn (integers)")
    if min(b, s, h, heads, f) < 1 or h % heads:
        raise SystemExit(f"calibrate: --model '{text}': positive, and hidden a multiple of heads")
    return {"micro": b, "seq": s, "hidden": h, "heads": heads, "ffn": f}


def attention_tflops(m: dict, repeats: int) -> float:
    """nibble's attention core as core/model/gpt.cpp runs it on a CPU (SingleRankContextParallel::causal_attention):
    torch SDPA, is_causal, FP32, q and k [batch, heads, seq, head_dim] (RoPE's outputs), v a strided view of the
    QKV projection's [batch, seq, heads, 3, head_dim] -- forward + backward, one micro-batch of one layer.
    The rate is over the FLOPs the planner charges for it (plan/flops.cpp attention_core = 4 b s^2 h; a flash
    kernel's causal forward half of that, its backward 2.5x the forward: plan/step_time.cpp), so the planner's
    attention term at this shape is the time measured here."""
    import torch
    b, s, h, heads = m["micro"], m["seq"], m["hidden"], m["heads"]
    hd = h // heads
    q = torch.randn(b, heads, s, hd, requires_grad=True)
    k = torch.randn(b, heads, s, hd, requires_grad=True)
    qkv = torch.randn(b, s, heads, 3, hd)
    v = qkv.permute(3, 0, 2, 1, 4)[2].requires_grad_()  # strided, as gpt.cpp passes qkv[2]
    dy = torch.randn(b, heads, s, hd)

    def step():
        q.grad = k.grad = v.grad = None
        torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=True).backward(dy)
    charged = (0.5 + 2.5 * 0.5) * 4.0 * b * s * s * h
    return charged / median_seconds(step, repeats) / 1e12


def find_plan(given: str | None) -> str:
    """The nibble-plan binary: --plan, else $NIBBLE_PLAN, else the one in the build tree of the nibble package
    imported (build/python_package/nibble -> build/nibble-plan), else build/nibble-plan in this checkout, else
    PATH."""
    given = given or os.environ.get("NIBBLE_PLAN")
    if given:
        candidates = [given]  # named: that one or an error
    else:
        candidates = []
        try:
            import nibble
            package_dir = os.path.dirname(os.path.abspath(nibble.__file__))
            candidates.append(os.path.join(os.path.dirname(os.path.dirname(package_dir)), "nibble-plan"))
        except ImportError:
            pass
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        candidates += [os.path.join(root, "build", "nibble-plan"), shutil.which("nibble-plan")]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise SystemExit(f"calibrate: no nibble-plan binary at {[c for c in candidates if c]}: it counts the bytes "
                     "the element-wise rates are over; build it (ninja nibble-plan) or pass --plan")


def planner_elementwise_bytes(plan: str, m: dict, recipe: str) -> float:
    """The bytes of one layer's element-wise work for one micro-batch of --model that nibble-plan's step model
    charges a layer in `recipe` on a calibrated CPU, and so what that recipe slot's measured rate must be over:
    `nibble-plan elementwise-bytes` (plan/step_time.h calibrated_elementwise_bytes), forward + backward."""
    cmd = [plan, "--hidden", str(m["hidden"]), "--heads", str(m["heads"]), "--kv-heads", str(m["heads"]),
           "--ffn", str(m["ffn"]), "--seq-len", str(m["seq"]), "--micro-batch", str(m["micro"]),
           "--global-batch", str(m["micro"]), "--recipe", recipe, "elementwise-bytes"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"calibrate: {' '.join(cmd)} failed:\n{r.stdout}{r.stderr}")
    return float(json.loads(r.stdout)["total"])


def block_elementwise_gbps(m: dict, repeats: int, recipe: str, layer_bytes: float) -> float:
    """A layer's non-GEMM work as nibble runs it in `recipe` (core/model/gpt.cpp layer_forward): two RMSNorms
    and the SwiGLU silu(gate) * up (nibble's, FP32; with COAT's compression of their saved inputs where the recipe
    has it) and the two residual adds, forward + backward through autograd, one micro-batch: `layer_bytes` (the
    planner's count for this shape and recipe, planner_elementwise_bytes) over the median time, so the planner's
    term at this shape is the time measured here."""
    import torch
    import nibble
    b, s, h, f = m["micro"], m["seq"], m["hidden"], m["ffn"]
    t = b * s
    norm1, norm2 = nibble.nn.RMSNorm(h, recipe=recipe), nibble.nn.RMSNorm(h, recipe=recipe)
    swiglu = nibble.nn.SwiGLU(recipe=recipe)
    leaves = [torch.randn(t, h, requires_grad=True) for _ in range(3)]  # x, attention out, MLP out
    gate, up = torch.randn(t, f, requires_grad=True), torch.randn(t, f, requires_grad=True)
    grads = [torch.randn(t, h), torch.randn(t, h), torch.randn(t, f), torch.randn(t, h)]

    def step():
        for p in [*leaves, gate, up, norm1.weight, norm2.weight]:
            p.grad = None
        x, attn, mlp = leaves
        n1 = norm1(x)
        h1 = x + attn
        n2 = norm2(h1)
        out = h1 + mlp
        torch.autograd.backward([n1, n2, swiglu(gate, up), out], grads)
    return layer_bytes / median_seconds(step, repeats) / 1e9


def remainder_config(m: dict, recipe: str, layers: int, tokens: str, out_dir: str, steps: int) -> str:
    """A nibble-train config (nibble-plan reads its [model], [train] and [optim] keys too) for one rank, one
    thread, one micro-batch per step, every layer in `recipe`, no eval, sample or checkpoint."""
    return "\n".join([
        "[model]", "vocab = 256", f"hidden = {m['hidden']}", f"layers = {layers}", f"heads = {m['heads']}",
        f"ffn_hidden = {m['ffn']}", f"seq_len = {m['seq']}", f'recipe = "{recipe}"', "bf16_first = 0",
        "bf16_last = 0", "seed = 0",
        "[data]", f'train = "{os.path.join(tokens, "train.bin")}"', f'val = "{os.path.join(tokens, "val.bin")}"',
        "[train]", f"steps = {steps}", f"global_batch = {m['micro']}", f"micro_batch = {m['micro']}",
        "eval_every = 0", "eval_batches = 1", "sample_tokens = 0", "threads = 1", f'out_dir = "{out_dir}"',
        "[optim]", "lr = 3e-3", "warmup = 0",
        "[checkpoint]", "every = 0", ""])


def token_files(train: str, work: str) -> str:
    """data/tokens when the set-up made it, else data/kjv.txt tokenized into `work` (nibble-train prepare)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    d = os.path.join(root, "data", "tokens")
    if os.path.isfile(os.path.join(d, "train.bin")):
        return d
    d = os.path.join(work, "tokens")
    r = subprocess.run([train, "prepare", "--input", os.path.join(root, "data", "kjv.txt"), "--out", d],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"calibrate: nibble-train prepare failed (the remainder runs need a corpus):\n{r.stderr}")
    return d


def layer_remainder(train: str, plan: str, described: str, m: dict, recipe: str, layers: int, steps: int,
                    warmup: int, tokens: str, work: str) -> tuple[float, float, float]:
    """(ns per layer and token, measured ms, predicted ms): nibble-train's median step (after `warmup` steps) at
    --model with `layers` layers in `recipe`, one micro-batch per step, one rank and thread, minus `nibble-plan
    predict` of the same config on `described` (the description without this term), per layer and token."""
    out = os.path.join(work, f"remainder_{recipe}")
    config = os.path.join(work, f"remainder_{recipe}.toml")
    with open(config, "w") as f:
        f.write(remainder_config(m, recipe, layers, tokens, out, warmup + steps))
    r = subprocess.run([train, "--config", config], capture_output=True, text=True,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    if r.returncode != 0:
        raise SystemExit(f"calibrate: nibble-train --config {config} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    with open(os.path.join(out, "metrics.jsonl")) as f:
        ms = [rec["ms_per_step"] for rec in map(json.loads, filter(str.strip, f)) if "ms_per_step" in rec]
    measured = statistics.median(ms[warmup:])
    cmd = [plan, "--cluster", described, "--config", config, "predict", "--tp", "1", "--cp", "1", "--dp", "1",
           "--pp", "1"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"calibrate: {' '.join(cmd)} failed:\n{p.stdout}{p.stderr}")
    predicted = float(json.loads(p.stdout)["ms_per_step"])
    ns = max(0.0, measured - predicted) * 1e6 / (layers * m["micro"] * m["seq"])
    return ns, measured, predicted


def mpi_worker(out: str, sizes: list[int], repeats: int, shapes: list[tuple[int, int, int]]) -> None:
    """Run under mpirun: times nibble.parallel collectives (the slowest rank's median), rank 0 writes JSON."""
    import torch
    import nibble
    torch.set_num_threads(1)
    nibble.set_num_threads(1)
    rt = nibble.parallel.init(select_device=False)
    world = nibble.parallel.world()
    rank, n = rt.rank, rt.world_size
    results = {"ranks": n, "all_reduce": [], "all_gather": [], "send_recv": []}
    for size in sizes:
        elems = size // 4
        full = torch.ones(elems)
        part = torch.ones(elems // n)
        recv = torch.empty(elems)
        ops = {"all_reduce": lambda: world.all_reduce(full),
               "all_gather": lambda: world.all_gather(part),
               # every rank sends to its right neighbour and receives from its left: one ring step
               "send_recv": lambda: world.send_recv(full, (rank + 1) % n, recv, (rank - 1) % n)}
        for name, op in ops.items():
            times = []
            for _ in range(repeats + 1):
                world.barrier()
                t0 = time.perf_counter()
                op()
                t = torch.tensor([time.perf_counter() - t0], dtype=torch.float64)
                times.append(float(world.all_reduce(t, op="max")))
            results[name].append([size, statistics.median(times[1:])])
    # Every rank runs the BF16 Linear at once: their rates summed, over one process's alone, are the cores
    # this machine gives a job now (fewer than it has when others share it).
    rate = linear_tflops("bf16", shapes, repeats)
    results["concurrent_tflops"] = float(world.all_reduce(torch.tensor([rate], dtype=torch.float64)))
    if rank == 0:
        with open(out, "w") as f:
            json.dump(results, f)
    nibble.parallel.shutdown()


def ring_terms(name: str, n: int, size: float) -> tuple[float, float]:
    """(latencies, bytes over the link) of one collective in plan/collectives.cpp's ring model."""
    if name == "all_reduce":
        return 2.0 * (n - 1), 2.0 * (n - 1) / n * size
    if name == "all_gather":
        return n - 1.0, (n - 1.0) / n * size
    return 1.0, float(size)  # send_recv: one ring step


def fit_alpha_beta(mpi: dict) -> tuple[float, float]:
    """Latency (s) and seconds per byte minimising the relative error over the collectives that only move data
    (all-gather, send/recv) at every measured size: least squares on t_i = L_i alpha + B_i beta, each row divided
    by t_i (so 4 KiB counts as much as 4 MiB)."""
    n = mpi["ranks"]
    rows = [(*ring_terms(name, n, size), t) for name in ("all_gather", "send_recv") for size, t in mpi[name]]
    s11 = sum((l / t) ** 2 for l, _, t in rows)
    s12 = sum((l / t) * (b / t) for l, b, t in rows)
    s22 = sum((b / t) ** 2 for _, b, t in rows)
    r1 = sum(l / t for l, _, t in rows)
    r2 = sum(b / t for _, b, t in rows)
    det = s11 * s22 - s12 * s12
    alpha, beta = (r1 * s22 - r2 * s12) / det, (s11 * r2 - s12 * r1) / det
    if alpha < 0:  # latency not resolvable at these sizes: bandwidth alone
        alpha, beta = 0.0, r2 / s22
    if beta <= 0:
        raise SystemExit("calibrate: the collective times do not grow with size; measure larger --sizes")
    return alpha, beta


def fit_reduce(mpi: dict, alpha: float, beta: float) -> float:
    """Seconds per byte of a rank's summation in an all-reduce: what each all-reduce takes beyond the ring model's
    data movement (alpha, beta), over the (n-1)/n of the buffer a rank reduces (plan/collectives.cpp), least
    relative error; 0 when the all-reduces take no longer than moving their data."""
    n = mpi["ranks"]
    rows = []  # (bytes a rank reduces, time beyond the data movement, time)
    for size, t in mpi["all_reduce"]:
        latencies, moved = ring_terms("all_reduce", n, size)
        rows.append(((n - 1) / n * size, t - (latencies * alpha + moved * beta), t))
    gamma = sum(x * excess / t ** 2 for x, excess, t in rows) / sum((x / t) ** 2 for x, _, t in rows)
    return max(0.0, gamma)


def measure_mpi(ranks: int, sizes: list[int], repeats: int, gemm: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "mpi.json")
        cmd = [shutil.which("mpirun") or "mpirun", "-np", str(ranks), "--oversubscribe", "--bind-to", "none",
               sys.executable, os.path.abspath(__file__), "--mpi-worker", out, "--sizes",
               ",".join(map(str, sizes)), "--repeats", str(repeats), "--gemm", gemm]
        r = subprocess.run(cmd, capture_output=True, text=True, env=MPI_ENV)
        if r.returncode != 0 or not os.path.exists(out):
            sys.exit(f"calibrate: the MPI measurement failed ({' '.join(cmd)}):\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
        with open(out) as f:
            return json.load(f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="plan/clusters/this_machine.toml")
    ap.add_argument("--name", default="this_machine")
    ap.add_argument("--ranks", type=int, default=4, help="ranks a job may run on this machine (gpus_per_node)")
    ap.add_argument("--mpi-ranks", type=int, default=0,
                    help="processes for the collective and concurrency measurement (0: one per core)")
    ap.add_argument("--gemm", default="512,256,768;512,256,256;512,256,688;512,688,256",
                    help="the Linears measured, tokens,in,out;...: a model's QKV, output, MLP in and out")
    ap.add_argument("--model", default="4,128,256,4,688",
                    help="micro_batch,seq,hidden,heads,ffn: the shapes of the attention and element-wise measurements")
    ap.add_argument("--remainder-layers", type=int, default=2,
                    help="layers of the nibble-train runs that measure cpu.layer_remainder_ns_per_token")
    ap.add_argument("--elements", type=int, default=1 << 22, help="elements of the element-wise bandwidth test")
    ap.add_argument("--sizes", default="4096,65536,1048576,4194304", help="collective sizes in bytes")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--plan", help="the nibble-plan binary that counts the element-wise bytes (default: "
                    "$NIBBLE_PLAN, the imported nibble package's build tree, build/nibble-plan, PATH); the "
                    "nibble-train beside it measures the layer remainder")
    ap.add_argument("--quick", action="store_true", help="small sizes and few repeats (tests): rates are rough")
    ap.add_argument("--mpi-worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.mpi_worker:
        mpi_worker(args.mpi_worker, sizes, args.repeats, parse_shapes(args.gemm))
        return
    if args.quick:
        # Collectives: 4 KiB and 4 MiB, median of 5, so that a rank descheduled by other work on the machine
        # cannot make the small size look slower than the large one (the fit then refuses, as it should).
        args.gemm, args.elements, sizes, args.repeats = "64,64,128", 1 << 16, [4096, 1 << 22], 5
        args.model = "2,32,64,4,128"

    import torch
    import nibble
    torch.set_num_threads(1)
    nibble.set_num_threads(1)
    shapes = parse_shapes(args.gemm)
    model = parse_model(args.model)
    plan = find_plan(args.plan)
    print(f"element-wise bytes per layer from {plan} elementwise-bytes")
    layer_bytes = {slot: planner_elementwise_bytes(plan, model, recipe) for slot, recipe in SLOTS}
    tflops = {slot: linear_tflops(recipe, shapes, args.repeats) for slot, recipe in SLOTS}
    gbps = elementwise_gbps(args.elements, args.repeats)
    attn = attention_tflops(model, 3 * args.repeats)  # milliseconds each: more repeats, a steadier median
    block_gbps = {slot: block_elementwise_gbps(model, 3 * args.repeats, recipe, layer_bytes[slot])
                  for slot, recipe in SLOTS}
    cores = len(os.sched_getaffinity(0))
    mpi = measure_mpi(args.mpi_ranks or cores, sizes, args.repeats, args.gemm)
    # Cores a job gets: concurrent throughput over one process's, at most the cores there are.
    effective_cores = min(float(cores), mpi["concurrent_tflops"] / tflops["bf16"])
    alpha, beta = fit_alpha_beta(mpi)
    gamma = fit_reduce(mpi, alpha, beta)
    latency_us, bandwidth_gbps = alpha * 1e6, 1.0 / beta / 1e9
    reduce_gbps = 1.0 / gamma / 1e9 if gamma > 0 else 0.0
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    load = os.getloadavg()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    print(f"calibrating {args.name}: {cores} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for slot, recipe in SLOTS:
        print(f"  Linears {args.gemm} fwd+bwd, {recipe:>11}: {tflops[slot] * 1e3:8.2f} GFLOP/s (one thread)")
    print(f"  element-wise BF16 add: {gbps:.2f} GB/s")
    print(f"  attention core (torch SDPA, FP32, causal) fwd+bwd at {args.model}: {attn * 1e3:.2f} GFLOP/s over the "
          "planner's count (one thread)")
    for slot, recipe in SLOTS:
        print(f"  a layer's norms, SwiGLU, residual adds fwd+bwd at {args.model}, {recipe:>11}: "
              f"{block_gbps[slot]:.2f} GB/s over nibble-plan's {layer_bytes[slot]:.0f} bytes (one thread)")
    print(f"  {mpi['ranks']} processes at once: {mpi['concurrent_tflops'] * 1e3:.2f} GFLOP/s together = "
          f"{effective_cores:.2f} cores of {cores}")
    print(f"  collectives over {mpi['ranks']} ranks: latency {latency_us:.1f} us, bandwidth {bandwidth_gbps:.2f} GB/s "
          f"(all-gather, send/recv); all-reduce sums at " + (f"{reduce_gbps:.2f} GB/s" if gamma > 0 else "no cost"))
    for name in ("all_reduce", "all_gather", "send_recv"):
        for size, t in mpi[name]:
            lat, moved = ring_terms(name, mpi["ranks"], size)
            summed = (mpi["ranks"] - 1) / mpi["ranks"] * size * gamma if name == "all_reduce" else 0.0
            fitted = lat * alpha + moved * beta + summed
            print(f"    {name:>10} {size:>9} B: {t * 1e6:9.1f} us measured, {fitted * 1e6:9.1f} us by the fit")

    lines = [
        f"# This CPU machine, measured by plan/calibrate.py on {stamp} (load average {load[0]:.2f}, {cores} cores).",
        "# Rates are one rank's with one thread, as nibble achieves them (not peaks): nibble-plan predicts with",
        "# efficiencies 1 on it and gives each of n ranks min(1, cores_per_node / n) of these rates.",
        f'name = "{args.name}"',
        f'description = "this machine: {cores} CPU cores, up to {args.ranks} MPI ranks over shared memory '
        f'(calibrated {stamp})"',
        f"gpus_per_node = {args.ranks}   # ranks a job runs on this machine",
        f"cores_per_node = {effective_cores:.3f}  # of {cores}: {mpi['ranks']} processes' BF16 Linears at once "
        "over one's",
        "cuda_sm = 0          # nibble's CPU GEMM emulation",
        "",
        "[dense_tflops]       # nibble.nn.Linear fwd+bwd, one thread, quantization included; "
        f"tokens,in,out {args.gemm}",
    ]
    lines += [f"{slot} = {tflops[slot]:.6f}   # recipe {recipe}" for slot, recipe in SLOTS]
    lines += ["", "[memory]",
              f"capacity_gb = {mem_gb / args.ranks:.2f}   # physical memory / ranks",
              f"bandwidth_gbps = {gbps:.3f}  # torch BF16 add, {args.elements} elements, one thread",
              "", f"[cpu]  # nibble's CPU paths, one thread, at micro_batch,seq,hidden,heads,ffn = {args.model}",
              f"attention_tflops = {attn:.6f}  # torch SDPA (FP32, causal) fwd+bwd over the planner's FLOPs "
              "(0.5 + 1.25) x 4 b s^2 h",
              "", "[cpu.elementwise_gbps]  # a layer's RMSNorms, SwiGLU, residual adds (FP32; COAT's compression "
              "where the recipe has it) fwd+bwd, over the bytes nibble-plan charges for them (elementwise-bytes)"]
    lines += [f"{slot} = {block_gbps[slot]:.3f}   # recipe {recipe}, over {layer_bytes[slot]:.0f} bytes"
              for slot, recipe in SLOTS]
    summing = [f"reduce_gbps = {reduce_gbps:.4f}  # all-reduce beyond the ring model's data movement"] if gamma > 0 else []
    lines += ["", f"[intra_node]  # nibble.parallel all-gather and send/recv over {mpi['ranks']} ranks, ring model fitted "
              f"(sizes {sizes} B); all-reduce's summation from its excess",
              f"bandwidth_gbps = {bandwidth_gbps:.4f}", f"latency_us = {latency_us:.2f}", *summing,
              "", "[inter_node]  # one machine: no second node (the same link, so a description loads)",
              f"bandwidth_gbps = {bandwidth_gbps:.4f}", f"latency_us = {latency_us:.2f}", *summing, ""]

    # The rest of a layer: nibble-train's own step minus the planner's prediction of it on what is measured above.
    train = os.path.join(os.path.dirname(plan), "nibble-train")
    if not os.access(train, os.X_OK):
        raise SystemExit(f"calibrate: no nibble-train beside {plan}: it measures the layer remainder")
    steps, warmup = (3, 1) if args.quick else (6, 2)
    with tempfile.TemporaryDirectory() as work:
        described = os.path.join(work, "described.toml")
        with open(described, "w") as f:
            f.write("\n".join(lines))
        tokens = token_files(train, work)
        remainder = {slot: layer_remainder(train, plan, described, model, recipe, args.remainder_layers, steps,
                                           warmup, tokens, work) for slot, recipe in SLOTS}
    for slot, recipe in SLOTS:
        ns, measured, predicted = remainder[slot]
        print(f"  nibble-train, 1 rank, {args.remainder_layers} layers at {args.model}, {recipe:>11}: {measured:.1f} ms "
              f"per step measured, {predicted:.1f} predicted without the remainder: {ns:.0f} ns per layer and token")
    lines += ["[cpu.layer_remainder_ns_per_token]  # nibble-train 1 rank, 1 thread, one micro-batch per step at "
              f"{args.model}, {args.remainder_layers} layers: measured step minus nibble-plan predict, per layer "
              "and token"]
    lines += [f"{slot} = {remainder[slot][0]:.1f}   # recipe {recipe}: {remainder[slot][1]:.1f} ms measured, "
              f"{remainder[slot][2]:.1f} ms predicted without it" for slot, recipe in SLOTS]
    lines.append("")

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
