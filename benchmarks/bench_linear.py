"""Linear layer forward + backward time per recipe, beside torch.nn.Linear in BF16 and FP32 measured in the
same run (ratios printed; nothing asserted: benchmarks report, tests assert).

    PYTHONPATH=build/python_package .venv/bin/python benchmarks/bench_linear.py [--tokens 4096 --in 1024 --out 4096]
"""
from __future__ import annotations

import argparse
import time

import torch

import nibble


def best_ms(step, repeats: int) -> float:
    step()  # warm-up: weight quantization cache, allocator
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--in-features", dest="k", type=int, default=1024)
    parser.add_argument("--out-features", dest="n", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    nibble.set_num_threads(args.threads)
    x32 = torch.randn(args.tokens, args.k)
    dy32 = torch.randn(args.tokens, args.n)

    def torch_step(dtype):
        lin = torch.nn.Linear(args.k, args.n, bias=False).to(dtype)
        x = x32.to(dtype).requires_grad_()
        dy = dy32.to(dtype)

        def step():
            lin.zero_grad(set_to_none=True)
            x.grad = None
            lin(x).backward(dy)
        return step

    def nibble_step(recipe):
        lin = nibble.nn.Linear(args.k, args.n, recipe=recipe)
        x = x32.clone().requires_grad_()

        def step():
            lin.zero_grad(set_to_none=True)
            x.grad = None
            lin(x).backward(dy32)
        return step

    flops = 3 * 2 * args.tokens * args.k * args.n  # fprop + dgrad + wgrad
    base16 = best_ms(torch_step(torch.bfloat16), args.repeats)
    base32 = best_ms(torch_step(torch.float32), args.repeats)
    print(f"Linear {args.tokens} tokens x {args.k} -> {args.n}, fwd+bwd, {args.threads} threads")
    print(f"{'contender':>16} {'ms':>9} {'GFLOP/s':>9} {'vs torch bf16':>14} {'vs torch fp32':>14}")
    print(f"{'torch bf16':>16} {base16:>9.1f} {flops / base16 / 1e6:>9.1f} {1.0:>14.2f} {base32 / base16:>14.2f}")
    print(f"{'torch fp32':>16} {base32:>9.1f} {flops / base32 / 1e6:>9.1f} {base16 / base32:>14.2f} {1.0:>14.2f}")
    for recipe in nibble.recipes:
        ms = best_ms(nibble_step(recipe), args.repeats)
        print(f"{recipe:>16} {ms:>9.1f} {flops / ms / 1e6:>9.1f} {base16 / ms:>14.2f} {base32 / ms:>14.2f}")


if __name__ == "__main__":
    main()
