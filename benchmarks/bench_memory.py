"""Peak memory of a training step: nibble-train per recipe and optimizer-state codec against a plain-PyTorch GPT
of the same architecture (benchmarks/plain_gpt.py; BF16 autocast, FP32 AdamW), at two sizes, and the bytes
nibble's layers save for backward per layer against Korthikanti et al.'s 16-bit count 34*s*b*h + 5*a*s^2*b.
Both sides are measured the same way: the peak of live torch CPU allocations at the allocator
(core/cpu_allocation_tracker.h) over the first two steps -- the plain model in this process, nibble-train in
its own (its memory account, launch/memory_account.h). Ratios are printed; nothing is asserted.

    PYTHONPATH=build/python_package .venv/bin/python benchmarks/bench_memory.py [--sizes small,medium]
"""
from __future__ import annotations

import argparse
import os
import tempfile

import torch

import nibble
from plain_gpt import PlainGpt
from train_runs import BATCH, ROOT, SEQ, SIZES, VOCAB, run_nibble_train, tokens_dir
# (label, nibble-train overrides)
RUNS = [
    ("bf16, fp32 states", ["--model.recipe", "bf16", "--optim.state", "fp32"]),
    ("bf16, fp32 states, compressed activations",
     ["--model.recipe", "bf16", "--optim.state", "fp32", "--model.compress_activations", "true"]),
    ("fp8_current, fp8 states", ["--model.recipe", "fp8_current", "--optim.state", "fp8"]),
    ("nvfp4, fp8 states, activations not compressed",
     ["--model.recipe", "nvfp4", "--optim.state", "fp8", "--model.compress_activations", "false"]),
    # (quantized presets compress the norms' and SwiGLU's saved inputs by default: COAT)
    ("nvfp4, fp8 states (+ compressed activations)", ["--model.recipe", "nvfp4", "--optim.state", "fp8"]),
    # Plain torch's autocast runs the attention core in BF16 and saves BF16 q, k, v and output; these rows do
    # the same (model.attention_precision), the others keep nibble's default FP32 core.
    ("bf16, fp32 states, bf16 attention",
     ["--model.recipe", "bf16", "--optim.state", "fp32", "--model.attention_precision", "bf16"]),
    ("nvfp4, fp8 states, bf16 attention (+ compressed act.)",
     ["--model.recipe", "nvfp4", "--optim.state", "fp8", "--model.attention_precision", "bf16"]),
]


def plain_torch_peak(hidden, layers, heads, ffn, threads):
    torch.manual_seed(0)
    nibble._C.track_cpu_allocations()
    model = PlainGpt(VOCAB, hidden, layers, heads, ffn, SEQ)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False)
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ + 1))
    nibble._C.reset_cpu_allocation_peak()
    for _ in range(2):  # the optimizer creates its states in the first step
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(tokens[:, :-1], tokens[:, 1:])
        loss.backward()
        opt.step()
    peak = nibble._C.cpu_allocation_stats()["peak"]
    del model, opt
    return peak


def nibble_account(binary, tokens, work, size, overrides, threads):
    # Two steps: the memory account covers a run's first two (launch/memory_account.h).
    records = run_nibble_train(binary, tokens, os.path.join(work, "run"), size, 2, threads, overrides)
    return next(r["memory"] for r in records if "memory" in r)


def mib(b):
    return b / 2**20


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--sizes", default="small,medium")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    binary = os.path.join(args.build, "nibble-train")
    with tempfile.TemporaryDirectory() as work:
        tokens = tokens_dir(binary, work)
        for size in args.sizes.split(","):
            hidden, layers, heads, ffn = SIZES[size]
            plain = plain_torch_peak(hidden, layers, heads, ffn, args.threads)
            params = PlainGpt(VOCAB, hidden, layers, heads, ffn, SEQ).parameter_count()
            korthikanti = (34 * SEQ * BATCH * hidden + 5 * heads * SEQ * SEQ * BATCH)  # bytes per layer, 16-bit
            print(f"\n{size}: {params / 1e6:.1f}M parameters (hidden {hidden}, {layers} layers, {heads} heads, "
                  f"ffn {ffn}), seq {SEQ}, batch {BATCH}, {args.threads} threads")
            print(f"  plain torch (bf16 autocast, fp32 AdamW): peak {mib(plain):8.1f} MiB")
            for label, overrides in RUNS:
                m = nibble_account(binary, tokens, work, size, overrides, args.threads)
                per_layer = m["saved_per_microbatch"] / layers
                print(f"  nibble {label:54s} peak {mib(m['peak']):8.1f} MiB  plain/nibble {plain / m['peak']:5.2f}x"
                      f" | states {mib(m['optimizer_states']):6.1f} MiB | saved by nibble layers {mib(per_layer):6.2f}"
                      f" MiB/layer = {per_layer / korthikanti:4.2f}x Korthikanti's 16-bit "
                      f"{mib(korthikanti):.2f} MiB")


if __name__ == "__main__":
    main()
