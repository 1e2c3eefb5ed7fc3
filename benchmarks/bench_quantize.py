"""Quantize throughput per scheme, in GB/s of float32 input read, beside a memcpy (torch clone) and beside
torchao's reference quantizers on the same input, all measured in this run.

Goal (the quantizer issue): every scheme at >= 50% of the memcpy rate on 2 threads, and >= 10x torchao's
reference on CPU. Both ratios are printed; nothing is asserted here (benchmarks report, tests assert).
The memcpy rate is re-measured beside every row (the "memcpy" column), so that a ratio compares two
rates taken under the same load on a shared machine, not one taken minutes earlier.
"""
from __future__ import annotations

import argparse
import time
import warnings

import torch

import nibble

warnings.filterwarnings("ignore")


def best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (page faults, lazy init)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def torchao_reference(scheme: str):
    try:
        from torchao.prototype.mx_formats.mx_tensor import to_mx
        from torchao.prototype.mx_formats.nvfp4_tensor import nvfp4_quantize, per_tensor_amax_to_scale
    except Exception:  # pragma: no cover - torchao missing or broken on this platform
        return None
    if scheme == "mxfp8":
        return lambda x: to_mx(x, torch.float8_e4m3fn, 32)
    if scheme == "mxfp4":
        return lambda x: to_mx(x, torch.float4_e2m1fn_x2, 32)
    if scheme == "nvfp4":
        return lambda x: nvfp4_quantize(x, 16, per_tensor_amax_to_scale(x.abs().max()))
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--elements", type=int, default=64 << 20)
    parser.add_argument("--cols", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--schemes", nargs="*", default=None, help="only these schemes (default: all)")
    parser.add_argument("--copies", choices=("row", "row+col", "both"), default="both")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    nibble.set_num_threads(args.threads)
    rows = args.elements // args.cols
    x = torch.randn(rows, args.cols, generator=torch.Generator().manual_seed(0))
    gbytes = x.numel() * 4 / 1e9
    memcpy = gbytes / best_seconds(lambda: x.clone(), args.repeats)
    print(f"input {rows}x{args.cols} float32 ({gbytes:.2f} GB), {args.threads} threads; memcpy {memcpy:.2f} GB/s")
    print(f"{'scheme':>18} {'copies':>8} {'GB/s':>7} {'memcpy':>7} {'vs memcpy':>10} {'torchao GB/s':>13} {'vs torchao':>11}")
    copies = {"row": (False,), "row+col": (True,), "both": (False, True)}[args.copies]
    for scheme in args.schemes or nibble.SCHEMES:
        for columnwise in copies:
            kwargs = dict(columnwise=columnwise, rht=(scheme == "nvfp4" and columnwise))
            memcpy = gbytes / best_seconds(lambda: x.clone(), args.repeats)
            rate = gbytes / best_seconds(lambda: nibble.quantize(x, scheme, **kwargs), args.repeats)
            ref = torchao_reference(scheme) if not columnwise else None
            ref_rate = gbytes / best_seconds(lambda: ref(x), 1) if ref else None
            print(f"{scheme:>18} {'row+col' if columnwise else 'row':>8} {rate:>7.2f} {memcpy:>7.2f} {rate / memcpy:>10.2f} "
                  + (f"{ref_rate:>13.3f} {rate / ref_rate:>11.1f}" if ref_rate else f"{'-':>13} {'-':>11}"))


if __name__ == "__main__":
    main()
