"""The CPU quantizer's fast paths (tiled passes, the exact-when-provable Hadamard butterfly with its fallback to
the float64 reference, 8-column vector lanes) against the independent references of test_quantize.py, on inputs
that mix both paths inside one vector: columns and rows spanning +-40 orders of magnitude among ordinary ones,
exact zeros, multi-tile shapes, float32 and bfloat16, RNE and stochastic rounding."""
import numpy as np
import pytest
import torch

import test_quantize as T

CONFIGS = ["nvfp4_rht", "nvfp4_rht_seeded", "mxfp4_quest", "nvfp4", "mxfp8", "fp8_block128x128", "nvfp4_2d"]


def mixed(shape, seed=7):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape)
    cols = rng.random(shape[1]) < 0.3
    a[:, cols] *= np.exp(rng.uniform(-40, 40, (shape[0], int(cols.sum()))))
    rows = rng.random(shape[0]) < 0.2
    a[rows, :] *= np.exp(rng.uniform(-40, 40, (int(rows.sum()), shape[1])))
    a[rng.random(shape) < 0.05] = 0.0
    return a.astype(np.float32)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mixed_exact_and_fallback_lanes_are_bit_exact(config, dtype):
    scheme, kw, ref, fmt = T.CONFIGS[config]
    shapes = [(256, 320), (160, 96)] if "quest" in config else [(256, 300), (160, 96)]
    for shape in shapes:
        x = T.to_torch(mixed(shape), dtype)
        for rounding in ("rne", "stochastic"):
            args = dict(rounding=rounding, seed=T.SEED, offset=T.OFFSET)
            q = T.nibble.quantize(x, scheme, rowwise=True, columnwise=True, **kw, **args)
            want = ref(x, rowwise=True, columnwise=True, **args)
            T.assert_copy_equal(q, want["rowwise"], f"{config} {shape} rowwise", scheme, fmt)
            T.assert_copy_equal(q.columnwise, want["columnwise"], f"{config} {shape} columnwise", scheme, fmt)
