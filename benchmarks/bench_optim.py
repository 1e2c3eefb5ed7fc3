"""Optimizer step throughput of nibble.optim.AdamW for every state codec against torch.optim.AdamW measured in the
same run, as a fraction of the machine's memory bandwidth (STREAM-like kernels, also measured in the same run),
and a table of bytes per parameter held (weights + master + states) beside COAT's published figures.

An optimizer step over large tensors is bound by memory traffic, so each configuration prints:
  Mparam/s     parameters stepped per second (best of --repeats steps);
  B/param      bytes read + written per parameter, from the layouts: the gradient (read twice by nibble: once by
               the NaN/Inf and norm check that decides whether the step runs, once by the update), the parameter
               (read and written; with an FP32 master: the master read and written, the model copy written), and
               each moment's values and side data (scales, k, centres: read and written);
  GB/s, %STREAM  that traffic per second, and its fraction of the best STREAM-like bandwidth;
  check s      of the step, the gradient check alone (the 4 B/param nibble reads that torch's step does not);
  vs torch     the step rate over torch's AdamW (fused=True when this torch has the CPU kernel, else
               foreach=True: the header says which), timed alternately with it step by step, so that a machine
               whose load changes during the run still compares like with like.

Benchmarks report, tests assert: this prints ratios and asserts nothing.
    python benchmarks/bench_optim.py [--params 100_000_000] [--threads 2] [--repeats 3]
"""
from __future__ import annotations

import argparse
import gc
import time

import torch

import nibble
from nibble import optim as nopt

TENSOR = 1 << 24  # the parameters are split into tensors of 16M elements (plus a remainder), like large layers


def make_params(total: int, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sizes = [TENSOR] * (total // TENSOR) + ([total % TENSOR] if total % TENSOR else [])
    params = []
    for n in sizes:
        p = torch.randn(n, generator=g).mul_(0.02).to(dtype).requires_grad_()
        p.grad = torch.randn(n, generator=g).mul_(1e-3).to(dtype)
        params.append(p)
    return params


def best_seconds(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


# ---- STREAM-like bandwidth (McCalpin's kernels on torch tensors, the same threads as the optimizers) --------
class Stream:
    """STREAM-like bandwidth (McCalpin's kernels on torch tensors, the threads the optimizers use), GB/s with bytes
    counted as STREAM counts them (each array read or written once). copy and triad write a destination they do
    not read, which the hardware also reads first (write-allocate) without STREAM counting it; the in-place update
    `a += s * b` reads what it writes, like an optimizer step. measure() runs each kernel once and keeps the best
    rate seen: called between the timed steps, it tracks a machine whose load changes during the run."""

    def __init__(self, n: int):
        self.a, self.b, self.c = torch.zeros(n), torch.ones(n), torch.full((n,), 2.0)
        self.kernels = {
            "copy": (lambda: self.a.copy_(self.b), 8),
            "triad": (lambda: torch.add(self.b, self.c, alpha=3.0, out=self.a), 12),
            "in-place a += s*b": (lambda: self.a.add_(self.b, alpha=1e-6), 12),
        }
        self.best = {name: 0.0 for name in self.kernels}
        for fn, _ in self.kernels.values():
            fn()  # first touch

    def measure(self) -> None:
        n = self.a.numel()
        for name, (fn, bytes_per_element) in self.kernels.items():
            self.best[name] = max(self.best[name], bytes_per_element * n / best_seconds(fn, 1) / 1e9)

    def limit(self) -> float:
        return max(self.best.values())


# ---- Bytes moved per parameter ------------------------------------------------------------------------------
def torch_adamw_bytes(weight_bytes: int) -> float:
    # param read + write, grad read, exp_avg and exp_avg_sq (FP32) read + write
    return 2 * weight_bytes + weight_bytes + 2 * 8


def nibble_adamw_bytes(opt: nopt.AdamW, n: int, weight_bytes: int) -> float:
    moments = opt.state_bytes() / n  # values + side data of both moments, per the codec's layout
    master = (opt.state_bytes(include_master=True) - opt.state_bytes()) / n
    gradient = 2 * weight_bytes  # the check pass and the update
    param = 2 * master + weight_bytes if master else 2 * weight_bytes
    return gradient + param + 2 * moments


def fused_cpu_available() -> bool:
    p = torch.zeros(8, requires_grad=True)
    p.grad = torch.zeros(8)
    try:
        torch.optim.AdamW([p], fused=True).step()
        return True
    except (RuntimeError, ValueError):
        return False


def alternate(ours, theirs, stream: Stream, repeats: int) -> tuple[float, float]:
    """Best seconds per step of two optimizers timed one step each in turn, with the STREAM kernels between (after
    an untimed first step each, which allocates their states)."""
    ours.step()
    theirs.step()
    best_ours = best_theirs = float("inf")
    for _ in range(repeats):
        best_ours = min(best_ours, best_seconds(ours.step, 1))
        best_theirs = min(best_theirs, best_seconds(theirs.step, 1))
        stream.measure()
    return best_ours, best_theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=int, default=100_000_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    nibble.set_num_threads(args.threads)
    n = args.params

    fused = fused_cpu_available()
    baseline_name = "torch AdamW fused=True" if fused else "torch AdamW foreach=True"

    def make_baseline(ps):
        return torch.optim.AdamW(ps, fused=True) if fused else torch.optim.AdamW(ps, foreach=True)

    configs = [(f"nibble {codec}", torch.float32, lambda ps, c=codec: nopt.AdamW(ps, state=c))
               for codec in nopt.STATE_CODECS]
    configs.append(("nibble fp8, bf16 + fp32 master", torch.bfloat16,
                    lambda ps: nopt.AdamW(ps, state="fp8", master="fp32")))
    configs.append(("nibble fp8, bf16 master-less SR", torch.bfloat16,
                    lambda ps: nopt.AdamW(ps, state="fp8", master="none")))

    stream = Stream(n)
    stream.measure()
    baseline_params = make_params(n, torch.float32, seed=1)
    baseline = make_baseline(baseline_params)
    baseline_bytes = torch_adamw_bytes(4)
    baseline_best = float("inf")
    rows, bytes_rows = [], []
    for name, dtype, make in configs:
        params = make_params(n, dtype)
        opt = make(params)
        sec, base_sec = alternate(opt, baseline, stream, args.repeats)
        baseline_best = min(baseline_best, base_sec)
        check_sec = best_seconds(opt._impl.grad_norm_squared, args.repeats)
        weight_bytes = 2 if dtype == torch.bfloat16 else 4
        rows.append((name, sec, nibble_adamw_bytes(opt, n, weight_bytes), check_sec, base_sec / sec))
        states = opt.state_bytes() / n
        master = (opt.state_bytes(include_master=True) - opt.state_bytes()) / n
        bytes_rows.append((name, weight_bytes, master, states))
        del opt, params
        gc.collect()
    rows.append((baseline_name, baseline_best, baseline_bytes, None, 1.0))
    bytes_rows.append((baseline_name, 4, 0.0, 8.0))

    limit = stream.limit()
    print(f"AdamW step on {n / 1e6:.1f}M parameters in tensors of up to {TENSOR >> 20}M, {args.threads} threads, "
          f"best of {args.repeats}; baseline {baseline_name} (CPU fused kernel "
          f"{'available' if fused else 'unavailable in this torch'})")
    print("STREAM-like bandwidth, best seen during the run, GB/s: " +
          ", ".join(f"{k} {v:.1f}" for k, v in stream.best.items()))
    print(f"bandwidth limit taken as the best of them: {limit:.1f} GB/s\n")
    print(f"{'configuration':>34} {'s/step':>7} {'Mparam/s':>9} {'B/param':>8} {'GB/s':>6} {'%STREAM':>8} "
          f"{'check s':>8} {'vs torch':>9}")
    for name, sec, moved, check_sec, ratio in rows:
        gbs = moved * n / sec / 1e9
        check = f"{check_sec:8.3f}" if check_sec is not None else f"{'-':>8}"
        note = "   (its best over all rows)" if check_sec is None else ""
        print(f"{name:>34} {sec:7.3f} {n / sec / 1e6:9.1f} {moved:8.2f} {gbs:6.1f} {100 * gbs / limit:7.0f}% "
              f"{check} {ratio:8.2f}x{note}")

    coat = {
        "nibble fp32": "FP32 m, v: 8 B (COAT's baseline)",
        "nibble fp8": "COAT: FP8 m, v 2 B + ~0.19 B side data",
        "nibble fp8, bf16 + fp32 master": "COAT: FP32 master only (needs FP32 params)",
        "nibble fp8_plain": "COAT w/o expansion: 2 B + 0.06 B",
        "nibble int8": "bitsandbytes 8-bit: 2 B + 0.03 B",
    }
    print()
    print("bytes per parameter held (weights + master + optimizer states; gradients not counted)")
    print(f"{'configuration':>34} {'weights':>8} {'master':>7} {'states':>7} {'total':>7}   published figure")
    for name, w, m, s in bytes_rows:
        print(f"{name:>34} {w:8.2f} {m:7.2f} {s:7.3f} {w + m + s:7.3f}   {coat.get(name, '')}")
    fp32_states = next(s for name, _, _, s in bytes_rows if name == "nibble fp32")
    fp8_states = next(s for name, _, _, s in bytes_rows if name == "nibble fp8")
    print(f"\nfp8 states are {fp32_states / fp8_states:.2f}x smaller than fp32 states (COAT: 8 / 2.19 = 3.65x)")


if __name__ == "__main__":
    main()
