"""Element-format self-check on real text.

Reads the installed corpus (data/kjv.txt, written by scripts/setup.sh from Debian's bible-kjv), turns its bytes into a float32 signal, and for every
training format reports the round-trip error of RNE and stochastic rounding, and that stochastic rounding
is unbiased: the mean of many SR draws approaches the input while RNE's error stays put.
"""
from __future__ import annotations

import argparse
import math
import os
import time

import torch

import nibble

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "kjv.txt")


def find_corpus() -> str:
    if not os.path.isfile(CORPUS):
        raise SystemExit(f"corpus {CORPUS} not found: run scripts/setup.sh (it writes it from Debian's bible-kjv)")
    return os.path.normpath(CORPUS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--elements", type=int, default=1 << 20)
    parser.add_argument("--draws", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(2)

    path = find_corpus()
    raw = open(path, "rb").read()[: args.elements]
    codes = torch.frombuffer(bytearray(raw), dtype=torch.uint8).float()
    # A zero-mean signal with a heavy tail: byte values centred and scaled by their letter frequency.
    x = (codes - codes.mean()) / codes.std()
    x = x * torch.exp(0.5 * torch.randn(x.numel(), generator=torch.Generator().manual_seed(0)))
    x = x[: x.numel() // 2 * 2]
    print(f"corpus: {path} ({len(raw):,} bytes -> {x.numel():,} float32 values)")
    print(f"relative error of one RNE round trip, one SR round trip, and the mean of {args.draws} SR draws")
    print(f"{'format':>8} {'max':>10} {'rne':>10} {'sr':>10} {'sr mean':>10} {'Mval/s':>8}")
    for fmt in ["e4m3", "e5m2", "e3m2", "e2m3", "e2m1", "e5m6"]:
        info = nibble.format_info(fmt)
        scale = info["max"] / x.abs().max().item() * 0.5
        xs = x * scale
        t0 = time.perf_counter()
        rne = nibble.decode(nibble.encode(xs, fmt), fmt)
        rate = xs.numel() / (time.perf_counter() - t0) / 1e6
        norm = xs.norm().item()
        rne_err = (rne - xs).norm().item() / norm
        sr_sum = torch.zeros_like(xs)
        for draw in range(args.draws):
            sr = nibble.decode(nibble.encode(xs, fmt, rounding="stochastic", seed=7, offset=draw), fmt)
            sr_sum += sr
        sr_err = (sr - xs).norm().item() / norm
        mean_err = (sr_sum / args.draws - xs).norm().item() / norm
        print(f"{fmt:>8} {info['max']:>10.4g} {rne_err:>10.3e} {sr_err:>10.3e} {mean_err:>10.3e} {rate:>8.0f}")
        # Unbiasedness: averaging n draws shrinks SR's error roughly like 1/sqrt(n); RNE cannot improve.
        if mean_err > 2.0 * sr_err / math.sqrt(args.draws) + 1e-7:
            raise SystemExit(f"{fmt}: stochastic rounding looks biased ({mean_err:.3e} after {args.draws} draws)")
    print("self-check passed: stochastic rounding averages to the input in every format")


if __name__ == "__main__":
    main()
