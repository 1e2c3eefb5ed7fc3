"""Optimizer step throughput (parameters per second) of nibble.optim.AdamW for every state codec, beside
torch.optim.AdamW (foreach, and fused when this torch has a CPU fused kernel) measured in the same run, and a
table of bytes per parameter (weights + master + states) per configuration beside COAT's published figures.

Benchmarks report, tests assert: this prints ratios and asserts nothing.
    python benchmarks/bench_optim.py [--params 100_000_000] [--threads 2] [--repeats 2]
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


def seconds_per_step(opt, repeats: int) -> float:
    opt.step()  # allocates the state (first-touch), not timed
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        opt.step()
        best = min(best, time.perf_counter() - t0)
    return best


def fused_cpu_available() -> bool:
    p = torch.zeros(8, requires_grad=True)
    p.grad = torch.zeros(8)
    try:
        torch.optim.AdamW([p], fused=True).step()
        return True
    except (RuntimeError, ValueError):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=int, default=100_000_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    nibble.set_num_threads(args.threads)
    n = args.params

    configs = [("torch AdamW foreach=True", torch.float32, lambda ps: torch.optim.AdamW(ps, foreach=True))]
    if fused_cpu_available():
        configs.append(("torch AdamW fused=True", torch.float32, lambda ps: torch.optim.AdamW(ps, fused=True)))
    for codec in nopt.STATE_CODECS:
        configs.append((f"nibble {codec}", torch.float32, lambda ps, c=codec: nopt.AdamW(ps, state=c)))
    configs.append(("nibble fp8, bf16 + fp32 master", torch.bfloat16,
                    lambda ps: nopt.AdamW(ps, state="fp8", master="fp32")))
    configs.append(("nibble fp8, bf16 master-less SR", torch.bfloat16,
                    lambda ps: nopt.AdamW(ps, state="fp8", master="none")))

    print(f"AdamW step on {n / 1e6:.1f}M parameters in tensors of up to {TENSOR >> 20}M, {args.threads} threads, "
          f"best of {args.repeats}")
    print(f"{'configuration':>34} {'s/step':>8} {'Mparam/s':>9} {'vs torch foreach':>17}")
    rates = {}
    bytes_rows = []
    for name, dtype, make in configs:
        params = make_params(n, dtype)
        opt = make(params)
        sec = seconds_per_step(opt, args.repeats)
        rates[name] = n / sec
        base = rates["torch AdamW foreach=True"]
        print(f"{name:>34} {sec:8.3f} {n / sec / 1e6:9.1f} {rates[name] / base:16.2f}x")
        weight_bytes = 2 if dtype == torch.bfloat16 else 4
        if isinstance(opt, nopt.AdamW):
            states = opt.state_bytes() / n
            master = (opt.state_bytes(include_master=True) - opt.state_bytes()) / n
        else:
            states = sum(t.numel() * t.element_size() for s in opt.state.values() for k, t in s.items()
                         if k != "step") / n
            master = 0.0
        bytes_rows.append((name, weight_bytes, master, states))
        del opt, params
        gc.collect()

    coat = {
        "nibble fp32": "FP32 m, v: 8 B (COAT's baseline)",
        "nibble fp8": "COAT: FP8 m, v 2 B + ~0.19 B side data",
        "nibble fp8, bf16 + fp32 master": "COAT: FP32 master only (needs FP32 params)",
        "nibble fp8_plain": "COAT w/o expansion: 2 B + 0.06 B",
        "nibble int8": "bitsandbytes 8-bit: 2 B + 0.03 B",
    }
    print()
    print("bytes per parameter (weights + master + optimizer states; gradients not counted)")
    print(f"{'configuration':>34} {'weights':>8} {'master':>7} {'states':>7} {'total':>7}   published figure")
    for name, w, m, s in bytes_rows:
        print(f"{name:>34} {w:8.2f} {m:7.2f} {s:7.3f} {w + m + s:7.3f}   {coat.get(name, '')}")
    fp32_states = next(s for name, _, _, s in bytes_rows if name == "nibble fp32")
    fp8_states = next(s for name, _, _, s in bytes_rows if name == "nibble fp8")
    print(f"\nfp8 states are {fp32_states / fp8_states:.2f}x smaller than fp32 states (COAT: 8 / 2.19 = 3.65x)")


if __name__ == "__main__":
    main()
