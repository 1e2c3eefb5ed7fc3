"""Block-scaled quantization (docs/QUANTIZATION.md): nibble.quantize, nibble.DelayedScaling, nibble.rht.

Oracles: tests/python/quant_reference.py (independent numpy / ml_dtypes implementations of every rule of the
spec, bit for bit, stochastic rounding included) and torchao's MX / NVFP4 reference quantizers where their rules
coincide with ours (and concrete inputs showing where they do not). Statistical tests cover stochastic rounding.
"""
import math

import numpy as np
import pytest
import torch

import nibble
import quant_reference as R

F32 = np.float32
FLT_MAX = float(np.finfo(np.float32).max)

# name -> (scheme, extra nibble.quantize kwargs, reference function, element format of the data)
CONFIGS = {
    "fp8_tensor": ("fp8_tensor", {}, lambda x, **k: R.fp8_tensor(x, "e4m3", **k), "e4m3"),
    "fp8_tensor_e5m2": ("fp8_tensor_e5m2", {}, lambda x, **k: R.fp8_tensor(x, "e5m2", **k), "e5m2"),
    "fp8_tensor_fmt_e5m2": ("fp8_tensor", dict(fmt="e5m2"), lambda x, **k: R.fp8_tensor(x, "e5m2", **k), "e5m2"),
    "fp8_tensor_pow2_eps": ("fp8_tensor", dict(pow2_scale=True, amax_epsilon=1e-3),
                            lambda x, **k: R.fp8_tensor(x, "e4m3", eps=1e-3, pow2=True, **k), "e4m3"),
    "fp8_block128": ("fp8_block128", {}, lambda x, **k: R.fp8_block128(x, "e4m3", **k), "e4m3"),
    "fp8_block128_nopow2": ("fp8_block128", dict(pow2_scale=False),
                            lambda x, **k: R.fp8_block128(x, "e4m3", pow2=False, **k), "e4m3"),
    "fp8_block128_e5m2": ("fp8_block128", dict(fmt="e5m2"), lambda x, **k: R.fp8_block128(x, "e5m2", **k), "e5m2"),
    "fp8_block128x128": ("fp8_block128x128", {}, lambda x, **k: R.fp8_block128x128(x, "e4m3", **k), "e4m3"),
    "fp8_block128x128_e5m2_nopow2": ("fp8_block128x128", dict(fmt="e5m2", pow2_scale=False),
                                     lambda x, **k: R.fp8_block128x128(x, "e5m2", pow2=False, **k), "e5m2"),
    "mxfp8": ("mxfp8", {}, lambda x, **k: R.mxfp8(x, "e4m3", **k), "e4m3"),
    "mxfp8_e5m2": ("mxfp8", dict(fmt="e5m2"), lambda x, **k: R.mxfp8(x, "e5m2", **k), "e5m2"),
    "mxfp8_floor": ("mxfp8", dict(mx_scale_rule="floor"), lambda x, **k: R.mxfp8(x, "e4m3", rule="floor", **k),
                    "e4m3"),
    "mxfp8_floor_e5m2": ("mxfp8", dict(mx_scale_rule="floor", fmt="e5m2"),
                         lambda x, **k: R.mxfp8(x, "e5m2", rule="floor", **k), "e5m2"),
    "nvfp4": ("nvfp4", {}, R.nvfp4, "e2m1"),
    "nvfp4_rht": ("nvfp4", dict(rht=True), lambda x, **k: R.nvfp4(x, rht=True, **k), "e2m1"),
    "nvfp4_rht_seeded": ("nvfp4", dict(rht=True, rht_seed=0xC0FFEE),
                         lambda x, **k: R.nvfp4(x, rht=True, rht_seed=0xC0FFEE, **k), "e2m1"),
    "nvfp4_2d": ("nvfp4_2d", {}, R.nvfp4_2d, "e2m1"),
    "mxfp4": ("mxfp4", {}, R.mxfp4, "e2m1"),
    "mxfp4_floor": ("mxfp4", dict(mx_scale_rule="floor"), lambda x, **k: R.mxfp4(x, rule="floor", **k), "e2m1"),
    "mxfp4_quest": ("mxfp4_quest", {}, R.mxfp4_quest, "e2m1"),
}

# (shape, columnwise too?) per family: non-divisible shapes everywhere the scheme allows them.
GENERIC_SHAPES = [((37, 200), True), ((130, 129), True), ((1, 33), True), ((64, 256), True)]
RHT_SHAPES = [((48, 200), True), ((160, 129), True), ((16, 33), True), ((64, 256), True)]  # M % 16 == 0
QUEST_SHAPES = [((32, 96), True), ((96, 160), True), ((37, 64), False), ((1, 32), False)]  # blocked dim % 32


def shapes_for(config):
    if "rht" in config:
        return RHT_SHAPES
    if "quest" in config:
        return QUEST_SHAPES
    return GENERIC_SHAPES


KINDS = ["normal", "extreme", "zeros", "single_hot", "tiny_hot", "inf"]


def make_input(kind, shape, seed=0):
    rng = np.random.default_rng([seed, *shape, KINDS.index(kind)])
    n = int(np.prod(shape))
    if kind == "normal":
        a = rng.standard_normal(n)
    elif kind == "extreme":  # magnitudes log-uniform over 1e-30 .. 1e30, random signs
        a = np.exp(rng.uniform(math.log(1e-30), math.log(1e30), n)) * rng.choice([-1.0, 1.0], n)
    elif kind == "zeros":
        a = np.zeros(n)
    elif kind in ("single_hot", "tiny_hot"):  # one nonzero: an ordinary value, or an FP32 subnormal
        a = np.zeros(n)
        a[rng.integers(n)] = (-2.75 if kind == "single_hot" else 1e-39) * rng.choice([-1.0, 1.0])
    elif kind == "inf":  # +Inf at (0, 5), -Inf at (M-1, K-1): never in one Hadamard group (RHT, QuEST) of a copy
        a = rng.standard_normal(n)
        a[min(5, n - 1)] = np.inf
        if shape[0] > 1 and shape[1] - 1 != 5:
            a[n - 1] = -np.inf
    else:
        raise AssertionError(kind)
    return a.astype(np.float32).reshape(shape)


def to_torch(a, dtype):
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)


# ---------------------------------------------------------------------------------------------------------
# Comparison helpers
# ---------------------------------------------------------------------------------------------------------


def _first_mismatch(got, want):
    g = np.asarray(got)
    w = np.asarray(want)
    if g.dtype == np.float32:
        bad = g.view(np.uint32) != w.view(np.uint32)
    else:
        bad = g != w
    if not bad.any():
        return None
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    return f"{int(bad.sum())} of {bad.size} differ; first at {idx}: got {g[idx]!r}, want {w[idx]!r}"


def assert_same_array(got, want, what):
    got = got.numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    want = np.asarray(want)
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, want {want.dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape}, want {want.shape}"
    msg = _first_mismatch(got, want)
    assert msg is None, f"{what}: {msg}"


def assert_copy_equal(got, want, what, scheme, fmt):
    """got: a nibble copy (QuantizedTensor / QuantizedCopy); want: the reference dict."""
    assert got is not None, f"{what}: copy missing"
    # Upstream quantities first, so a failure names the root cause.
    ga = got.global_amax
    assert isinstance(ga, torch.Tensor) and ga.dim() == 0 and ga.dtype == torch.float32, f"{what} global_amax {ga!r}"
    assert_same_array(ga.numpy(), np.asarray(want["global_amax"], np.float32), f"{what} global_amax")
    scale = got.scale
    if scheme in ("fp8_tensor", "fp8_tensor_e5m2"):
        scale = scale.reshape(-1)  # its [1] storage shape is checked in test_storage_shapes_and_dtypes
    assert_same_array(scale, want["scale"], f"{what} scale")
    assert_same_array(got.data, want["data"], f"{what} data")
    if want["mask"] is None:
        assert got.mask is None, f"{what}: unexpected mask"
    else:
        assert_same_array(got.mask, want["mask"], f"{what} mask")
    rows, cols = want["data"].shape[0], got.shape[1]
    deq = got.dequantize()
    assert deq.dtype == torch.float32
    assert_same_array(deq, R.dequantize(want, scheme, (rows, cols), fmt), f"{what} dequantize")


SEED = 0x0123456789AB  # > 32 bits: both key words matter
OFFSET = (3 << 32) | 5  # > 32 bits: both offset words matter


# ---------------------------------------------------------------------------------------------------------
# 1. Bit-exact against the reference: every scheme, input kind, dtype, shape, copy and rounding
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_bit_exact_against_reference(config, kind, dtype):
    scheme, kw, ref, fmt = CONFIGS[config]
    for shape, both in shapes_for(config):
        x = to_torch(make_input(kind, shape), dtype)
        for rounding in ("rne", "stochastic"):
            args = dict(rounding=rounding, seed=SEED, offset=OFFSET)
            what = f"{config} {kind} {tuple(shape)} {dtype} {rounding}"
            q = nibble.quantize(x, scheme, rowwise=True, columnwise=both, **kw, **args)
            want = ref(x, rowwise=True, columnwise=both, **args)
            assert q.rowwise_present
            assert_copy_equal(q, want["rowwise"], what + " rowwise", scheme, fmt)
            if both:
                assert tuple(q.columnwise.shape) == (shape[1], shape[0])
                assert_copy_equal(q.columnwise, want["columnwise"], what + " columnwise", scheme, fmt)
            else:
                assert q.columnwise is None


@pytest.mark.parametrize("config", list(CONFIGS))
def test_columnwise_only_equals_the_columnwise_copy_of_both(config):
    scheme, kw, ref, fmt = CONFIGS[config]
    shape = (64, 96)
    x = to_torch(make_input("normal", shape, seed=1), torch.float32)
    for rounding in ("rne", "stochastic"):
        both = nibble.quantize(x, scheme, rowwise=True, columnwise=True, rounding=rounding, seed=3, **kw)
        col = nibble.quantize(x, scheme, rowwise=False, columnwise=True, rounding=rounding, seed=3, **kw)
        assert not col.rowwise_present and col.data is None
        with pytest.raises(ValueError):
            col.dequantize()
        want = ref(x, rowwise=False, columnwise=True, rounding=rounding, seed=3)
        assert_copy_equal(col.columnwise, want["columnwise"], f"{config} {rounding} columnwise only", scheme, fmt)
        assert torch.equal(col.columnwise.data, both.columnwise.data)


def test_storage_shapes_and_dtypes():
    """Exactly the layout of the spec: scale arrays ceil(cols / block) wide, FP4 ceil(cols / 2) bytes per row,
    the columnwise copy (K, M), the per-tensor scale shape [1]."""
    M, K = 37, 200
    x = torch.randn(M, K)
    f32, u8 = torch.float32, torch.uint8
    want = {  # scheme: (row data, row scale, scale dtype, col data, col scale)
        "fp8_tensor": ((M, K), (1,), f32, (K, M), (1,)),
        "fp8_tensor_e5m2": ((M, K), (1,), f32, (K, M), (1,)),
        "fp8_block128": ((M, K), (M, 2), f32, (K, M), (K, 1)),
        "fp8_block128x128": ((M, K), (1, 2), f32, (K, M), (2, 1)),
        "mxfp8": ((M, K), (M, 7), u8, (K, M), (K, 2)),
        "nvfp4": ((M, 100), (M, 13), u8, (K, 19), (K, 3)),
        "nvfp4_2d": ((M, 100), (M, 13), u8, (K, 19), (K, 3)),
        "mxfp4": ((M, 100), (M, 7), u8, (K, 19), (K, 2)),
    }
    problems = []
    for scheme, (rd, rs, sdt, cd, cs) in want.items():
        q = nibble.quantize(x, scheme, columnwise=True)
        for copy, d, s in [(q, rd, rs), (q.columnwise, cd, cs)]:
            got = (tuple(copy.data.shape), copy.data.dtype, tuple(copy.scale.shape), copy.scale.dtype,
                   tuple(copy.global_amax.shape), copy.mask)
            if got != (d, u8, s, sdt, (), None):
                problems.append(f"{scheme}: got {got}, want {(d, u8, s, sdt, (), None)}")
    q = nibble.quantize(torch.randn(64, 96), "mxfp4_quest", columnwise=True)
    got = [(tuple(c.data.shape), tuple(c.scale.shape), c.scale.dtype, tuple(c.mask.shape), c.mask.dtype)
           for c in (q, q.columnwise)]
    if got != [((64, 48), (64, 3), u8, (64, 96), u8), ((96, 32), (96, 2), u8, (96, 64), u8)]:
        problems.append(f"mxfp4_quest: {got}")
    assert not problems, "\n".join(problems)


def test_leading_dims_flatten_into_rows():
    x = torch.randn(2, 3, 64)
    for scheme in ["fp8_block128", "mxfp8", "nvfp4", "mxfp4_quest"]:
        a = nibble.quantize(x, scheme, columnwise=scheme != "mxfp4_quest")
        b = nibble.quantize(x.reshape(6, 64), scheme, columnwise=scheme != "mxfp4_quest")
        assert tuple(a.dequantize().shape) == (6, 64)
        assert torch.equal(a.data, b.data) and torch.equal(a.scale, b.scale), scheme
        if scheme != "mxfp4_quest":
            assert tuple(a.columnwise.shape) == (64, 6)
            assert torch.equal(a.columnwise.data, b.columnwise.data), scheme
    # A 1-D input is one row.
    v = torch.randn(64)
    assert torch.equal(nibble.quantize(v, "nvfp4").data, nibble.quantize(v.reshape(1, 64), "nvfp4").data)


def test_non_contiguous_input_equals_its_contiguous_copy():
    base = torch.randn(96, 64)
    for scheme in ["fp8_tensor", "fp8_block128x128", "mxfp8", "nvfp4", "nvfp4_2d", "mxfp4"]:
        for v in (base.t(), base[::2, 1:]):
            a = nibble.quantize(v, scheme, columnwise=True, rounding="stochastic", seed=4)
            b = nibble.quantize(v.contiguous(), scheme, columnwise=True, rounding="stochastic", seed=4)
            assert torch.equal(a.data, b.data) and torch.equal(a.columnwise.data, b.columnwise.data), scheme


# ---------------------------------------------------------------------------------------------------------
# 2. Targeted rules
# ---------------------------------------------------------------------------------------------------------


def test_block_fp8_value_for_inf_is_the_input_dtype_max():
    """A block whose amax is so small that fmax / amax is Inf gets scale = FLT_MAX (float32 input) or
    0x7F7F = 3.3895314e38 (bfloat16 input); without pow2 rounding the two stored scale_inv differ."""
    x = torch.zeros(2, 128)
    x[0, 3] = 1e-39
    x[1, 0] = 1.0
    for dtype, vfi in [(torch.float32, F32(FLT_MAX)), (torch.bfloat16, F32(3.3895314e38))]:
        xd = x.to(dtype)
        assert float(xd[0, 3]) > 0
        q = nibble.quantize(xd, "fp8_block128", pow2_scale=False)
        assert q.scale.numpy()[0, 0] == F32(1.0) / vfi, (dtype, q.scale)
        assert q.scale.numpy()[1, 0] == F32(1.0) / (F32(448.0) / F32(1.0))
        q2 = nibble.quantize(xd, "fp8_block128")  # pow2: both become 2^127
        assert q2.scale.numpy()[0, 0] == F32(2.0**-127)


def test_mxfp8_e8m0_rounding_cases():
    """float_to_e8m0(amax * (1/448)) on crafted block maxima, one block per row (TE rule), and the OCP floor."""
    f = np.float32
    amaxes = np.array([448.0, np.nextafter(f(448.0), f(1e9)), 500.0, 300.0, 1.0, 2.0**-120, 2.0**-130, 1e-45,
                       3e38, FLT_MAX, 0.0, 896.0, 449.0, 447.0, 2.0**-126 * 448, 6e-39], np.float32)
    x = np.zeros((amaxes.size, 32), np.float32)
    x[:, 7] = amaxes
    x[:, 8] = -amaxes / 3
    for rule in ("ceil", "floor"):
        q = nibble.quantize(torch.from_numpy(x), "mxfp8", mx_scale_rule=rule)
        want = R.mx_scale_code(amaxes, "e4m3", rule)
        assert_same_array(q.scale[:, 0], want, f"e8m0 {rule}")
    codes = nibble.quantize(torch.from_numpy(x), "mxfp8").scale[:, 0].tolist()
    # 448 -> 2^0 (exact), 448 + ulp -> 2^1, 500 -> 2^1, 300 -> 2^0, 1 -> 2^ceil(log2(1/448)) = 2^-8
    assert codes[:5] == [127, 128, 128, 127, 119]


def test_mx_floor_versus_ceil_on_block_amax_500():
    """TE's ceil E8M0 rule never clips the block max; the OCP floor rule can: amax 500 gives floor scale 2^0, so
    500 saturates to 448, while ceil gives 2^1 and 500 / 2 = 250 rounds to 256 (E4M3 step 16 above 128)."""
    x = torch.zeros(1, 32)
    x[0, 0] = 500.0
    x[0, 1] = -3.0
    fl = nibble.quantize(x, "mxfp8", mx_scale_rule="floor")
    ce = nibble.quantize(x, "mxfp8")
    assert fl.scale.tolist() == [[127]] and ce.scale.tolist() == [[128]]
    assert fl.data[0, 0].item() == 0x7E  # 448: clipped
    assert fl.dequantize()[0, 0].item() == 448.0
    assert ce.dequantize()[0, 0].item() == 512.0  # 256 * 2
    assert ce.dequantize()[0, 1].item() == -3.0 and fl.dequantize()[0, 1].item() == -3.0


def test_nvfp4_zero_block_and_global_rules():
    x = torch.zeros(2, 48)
    x[0, 0] = 2688.0 * 4  # S_enc = 1/4
    x[0, 20] = 1.0
    q = nibble.quantize(x, "nvfp4")
    s = q.scale.numpy()
    assert s[0, 2] == 0 and s[1].tolist() == [0, 0, 0]  # zero blocks: scale code 0, enc = FLT_MAX, q = 0
    assert s[0, 0] == 0x7E  # the global max block: 448
    assert np.all(q.data.numpy()[1] == 0) and np.all(q.dequantize().numpy()[1] == 0)
    assert float(q.global_amax) == 2688.0 * 4
    z = nibble.quantize(torch.zeros(3, 16), "nvfp4")  # global amax 0 -> S_enc = 1
    assert float(z.global_amax) == 0.0 and z.scale.sum() == 0 and z.data.sum() == 0


# ---------------------------------------------------------------------------------------------------------
# 3. NVFP4 2-D
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(64, 96), (37, 200), (130, 129), (16, 16)])
@pytest.mark.parametrize("rounding", ["rne", "stochastic"])
def test_nvfp4_2d_copies_are_transposes(shape, rounding):
    M, K = shape
    x = torch.randn(shape) * torch.exp2(torch.randint(-4, 5, (M, 1)).float())
    q = nibble.quantize(x, "nvfp4_2d", columnwise=True, rounding=rounding, seed=11)
    c = q.columnwise
    rowc = R.unpack_fp4(q.data.numpy(), K)
    colc = R.unpack_fp4(c.data.numpy(), M)
    assert np.array_equal(rowc.T, colc)
    tr, tc = q.scale.numpy()[::16], c.scale.numpy()[::16]  # one row per 16-row tile
    assert tr.shape == (-(-M // 16), -(-K // 16)) and np.array_equal(tr, tc.T)
    assert np.array_equal(q.scale.numpy(), np.repeat(tr, 16, axis=0)[:M])  # replicated to the tile's rows
    assert np.array_equal(c.scale.numpy(), np.repeat(tc, 16, axis=0)[:K])
    assert torch.equal(q.dequantize().t(), c.dequantize())
    assert float(q.global_amax) == float(c.global_amax) == float(x.abs().max())
    if tr.size > 1:
        assert len(np.unique(tr)) > 1


def test_nvfp4_2d_rejects_rht():
    with pytest.raises(ValueError, match="rht"):
        nibble.quantize(torch.randn(32, 32), "nvfp4_2d", columnwise=True, rht=True)


# ---------------------------------------------------------------------------------------------------------
# 4. Random Hadamard transform
# ---------------------------------------------------------------------------------------------------------


def test_philox_known_answer():
    assert [int(w) for w in R.philox4x32_10([0, 0, 0, 0], [0, 0])] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]


@pytest.mark.parametrize("seed", [0, 1, 0xC0FFEE, (1 << 40) + 3])
def test_rht_matrix_matches_construction_and_is_orthogonal(seed):
    h = nibble.rht_matrix(seed=seed)
    assert h.dtype == torch.float32 and tuple(h.shape) == (16, 16)
    want = R.rht_matrix(seed)
    assert_same_array(h.numpy(), want.astype(np.float32), f"rht_matrix({seed})")
    h64 = h.numpy().astype(np.float64)
    assert np.array_equal(h64 @ h64.T, np.eye(16))  # entries are ±1/4: exact
    signs = np.round(h64[:, 0] * 4).astype(int)  # H16's first column is all ones
    assert signs.tolist() == R.rht_sign_vector(seed)
    if seed == 0:
        assert signs.tolist() == list(R.TE_RHT_SIGNS)


def test_rht_seeds_give_different_sign_vectors():
    vecs = {tuple(np.sign(nibble.rht_matrix(seed=s).numpy()[:, 0]).tolist()) for s in range(0, 12)}
    assert len(vecs) >= 10


@pytest.mark.parametrize("seed", [0, 7])
def test_rht_function_matches_reference(seed):
    x = make_input("extreme", (24, 80), seed=2)
    got = nibble.rht(torch.from_numpy(x), seed=seed)
    assert got.dtype == torch.float32 and tuple(got.shape) == (24, 80)
    assert_same_array(got.numpy(), R.rht_apply(x, seed), f"rht seed {seed}")
    with pytest.raises(ValueError, match="16"):
        nibble.rht(torch.randn(4, 40), seed=seed)


@pytest.mark.parametrize("seed", [0, 7])
def test_rht_preserves_the_wgrad_product(seed):
    g = torch.Generator().manual_seed(seed)
    M, K, N = 128, 48, 40
    x = torch.randn(M, K, generator=g)
    dy = torch.randn(M, N, generator=g)
    xt = nibble.rht(x.t().contiguous(), seed=seed)  # (K, M): transform along M
    dyt = nibble.rht(dy.t().contiguous(), seed=seed)  # (N, M)
    got = dyt.double() @ xt.double().t()
    want = dy.double().t() @ x.double()
    err = (got - want).norm() / want.norm()
    assert err < 1e-5, err
    assert (xt - x.t()).abs().max() > 0.1  # it did transform


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rht_seed", [0, 99])
def test_rht_columnwise_global_amax_is_taken_after_the_transform(dtype, rht_seed):
    x = (torch.randn(64, 48) * 3).to(dtype)
    x[5, 7] = 40.0  # a spike: the transform spreads it, so max|RHT(x^T)| = 10-ish < max|x|
    q = nibble.quantize(x, "nvfp4", columnwise=True, rht=True, rht_seed=rht_seed)
    t = R.rht_apply(x.float().t().contiguous().numpy(), rht_seed, to_bf16=dtype == torch.bfloat16)
    assert float(q.columnwise.global_amax) == float(np.abs(t).max())
    if dtype == torch.float32:
        assert float(q.columnwise.global_amax) == float(nibble.rht(x.t().contiguous(), seed=rht_seed).abs().max())
    assert float(q.global_amax) == float(x.float().abs().max()) == 40.0
    assert float(q.columnwise.global_amax) < 40.0
    # The rowwise copy is untouched by rht.
    plain = nibble.quantize(x, "nvfp4", columnwise=True)
    assert torch.equal(q.data, plain.data) and torch.equal(q.scale, plain.scale)
    assert not torch.equal(q.columnwise.data, plain.columnwise.data)


def test_rht_needs_rows_multiple_of_16():
    x = torch.randn(40, 64)
    with pytest.raises(ValueError, match=r"16") as info:
        nibble.quantize(x, "nvfp4", columnwise=True, rht=True)
    assert "40" in str(info.value) and "multiple" in str(info.value)


def test_quest_needs_blocked_dim_multiple_of_32():
    with pytest.raises(ValueError, match=r"32") as info:
        nibble.quantize(torch.randn(64, 48), "mxfp4_quest")
    assert "48" in str(info.value) and "multiple" in str(info.value)
    with pytest.raises(ValueError, match=r"32") as info:
        nibble.quantize(torch.randn(48, 64), "mxfp4_quest", columnwise=True)
    assert "48" in str(info.value)
    q = nibble.quantize(torch.randn(48, 64), "mxfp4_quest")  # the rowwise copy alone only needs K % 32
    assert tuple(q.mask.shape) == (48, 64)


def test_quest_dequantizes_to_the_transformed_domain_and_clips_some():
    x = torch.randn(64, 128)
    q = nibble.quantize(x, "mxfp4_quest", columnwise=True)
    h = R.quest_hadamard(x.numpy()).reshape(64, 128)
    d = q.dequantize().numpy()
    rel = np.linalg.norm(d - h) / np.linalg.norm(h)
    assert rel < 0.2, rel  # FP4 error, in the Hadamard domain
    assert np.linalg.norm(d - x.numpy()) / np.linalg.norm(x.numpy()) > 0.5  # not the original domain
    frac = 1 - q.mask.float().mean().item()
    assert 0.0 < frac < 0.2, frac
    # H is orthogonal: the product of two transformed operands is the original product.
    w = torch.randn(32, 128)
    hw = R.quest_hadamard(w.numpy()).reshape(32, 128).astype(np.float64)
    prod = h.astype(np.float64) @ hw.T
    assert np.linalg.norm(prod - x.double().numpy() @ w.double().numpy().T) / np.linalg.norm(prod) < 1e-6


# ---------------------------------------------------------------------------------------------------------
# 5. Stochastic rounding
# ---------------------------------------------------------------------------------------------------------


def _unclipped(scheme, x):
    """Elements whose scaled value is within the element range (SR is unbiased there)."""
    a = x.numpy()
    if scheme == "nvfp4":
        s_enc, s_dec = R.nvfp4_global(R._amax(a))
        s = R.nvfp4_block_codes(R._block_amax(a, 16), s_enc)
        return np.abs(a) * R._expand(R.nvfp4_enc(s, s_dec), 16, a.shape[1]) <= 6
    return np.ones(a.shape, bool)  # block FP8 (pow2 scale rounds down) and MX ceil never clip


@pytest.mark.parametrize("scheme", ["nvfp4", "mxfp4", "fp8_block128"])
def test_stochastic_rounding_is_unbiased(scheme):
    torch.manual_seed(5)
    x = torch.randn(64, 256)
    keep = _unclipped(scheme, x)
    assert keep.mean() > 0.9
    xn = x.numpy().astype(np.float64)

    def rmse(d):
        return float(np.sqrt(np.mean((d[keep] - xn[keep]) ** 2)))

    draws = np.stack([nibble.quantize(x, scheme, rounding="stochastic", seed=s).dequantize().numpy()
                      for s in range(64)]).astype(np.float64)
    rne = rmse(nibble.quantize(x, scheme).dequantize().numpy().astype(np.float64))
    m16, m64 = rmse(draws[:16].mean(0)), rmse(draws.mean(0))
    assert m64 < 0.5 * rne, (m64, rne)  # TE's test: the mean of SR draws beats one RNE
    assert m16 / m64 > 1.5, (m16, m64)  # error shrinks like 1/sqrt(n): 4x draws -> about 2x smaller
    # Offsets give independent draws too.
    by_offset = np.stack([nibble.quantize(x, scheme, rounding="stochastic", seed=1, offset=o).dequantize().numpy()
                          for o in range(64)]).astype(np.float64)
    assert rmse(by_offset.mean(0)) < 0.5 * rne


@pytest.mark.parametrize("scheme", ["nvfp4", "mxfp4", "fp8_block128", "nvfp4_2d", "mxfp8"])
def test_stochastic_is_reproducible_and_seeded(scheme):
    x = torch.randn(64, 256)
    a = nibble.quantize(x, scheme, columnwise=True, rounding="stochastic", seed=42, offset=3)
    b = nibble.quantize(x, scheme, columnwise=True, rounding="stochastic", seed=42, offset=3)
    assert torch.equal(a.data, b.data) and torch.equal(a.columnwise.data, b.columnwise.data)
    for kw in [dict(seed=43, offset=3), dict(seed=42, offset=4)]:
        c = nibble.quantize(x, scheme, columnwise=True, rounding="stochastic", **kw)
        assert (c.data != a.data).float().mean() > 0.05, kw
        assert torch.equal(c.scale, a.scale)  # the scales do not depend on the rounding


@pytest.mark.parametrize("scheme", ["nvfp4", "mxfp4", "fp8_block128", "nvfp4_2d"])
def test_stochastic_is_identical_for_any_thread_count(scheme, restore_nibble_threads):
    x = torch.randn(512, 1024)
    kw = dict(columnwise=True, rounding="stochastic", seed=9, offset=(1 << 40) + 1)
    nibble.set_num_threads(1)
    one = nibble.quantize(x, scheme, **kw)
    nibble.set_num_threads(2)
    two = nibble.quantize(x, scheme, **kw)
    assert torch.equal(one.data, two.data) and torch.equal(one.scale, two.scale)
    assert torch.equal(one.columnwise.data, two.columnwise.data)


def test_rowwise_and_columnwise_copies_use_different_bits():
    x = torch.randn(96, 160)
    # Per-tensor FP8: the two copies share one scale, so with RNE they are exact transposes of each other...
    rne = nibble.quantize(x, "fp8_tensor", columnwise=True)
    assert torch.equal(rne.data.t(), rne.columnwise.data)
    # ...and with SR they are not: the columnwise copy draws from offset + 2^63.
    sr = nibble.quantize(x, "fp8_tensor", columnwise=True, rounding="stochastic", seed=5, offset=17)
    inexact = R.decode(rne.data.numpy(), "e4m3") * float(rne.scale.reshape(-1)[0]) != x.numpy()
    differ = (sr.data != sr.columnwise.data.t()).numpy()[inexact]
    assert differ.mean() > 0.1, differ.mean()
    # NVFP4 1-D: the columnwise copy is the reference with offset + 2^63, not with the rowwise stream.
    q = nibble.quantize(x, "nvfp4", columnwise=True, rounding="stochastic", seed=5, offset=17)
    good = R.nvfp4(x, rowwise=False, columnwise=True, rounding="stochastic", seed=5, offset=17)["columnwise"]
    same = R.nvfp4(x, rowwise=False, columnwise=True, rounding="stochastic", seed=5,
                   offset=(17 - (1 << 63)) % (1 << 64))["columnwise"]
    assert_same_array(q.columnwise.data, good["data"], "nvfp4 SR columnwise")
    assert (good["data"] != same["data"]).mean() > 0.2
    # The columnwise offset wraps mod 2^64.
    w = nibble.quantize(x, "nvfp4", rowwise=False, columnwise=True, rounding="stochastic", seed=5,
                        offset=(1 << 63) + 9)
    ref = R.nvfp4(x, rowwise=False, columnwise=True, rounding="stochastic", seed=5, offset=(1 << 63) + 9)
    assert_same_array(w.columnwise.data, ref["columnwise"]["data"], "nvfp4 SR columnwise, wrapped offset")


# ---------------------------------------------------------------------------------------------------------
# 6. Delayed scaling
# ---------------------------------------------------------------------------------------------------------

TINY = 1e-45  # rounds to the smallest FP32 subnormal: 448 / it is Inf -> FLT_MAX
INF = float("inf")
# Per step, the amaxes recorded (two records in one step are max-reduced: step 17).
STEP_AMAXES = [[7.0], [14.0], [3.5], [0.0], [28.0], [INF], [1.75], [0.875], [0.875], [0.875], [0.875], [56.0],
               [0.0], [0.0], [0.0], [0.0], [112.0, 224.0], [3.0], [TINY], [448.0]]
# history_len = 4: algo "max" sees the last 4 steps; a window holding Inf or only zeros keeps the old scale.
EXPECTED_SCALES = {
    ("max", 0): [64, 32, 32, 32, 16, 16, 16, 16, 16, 256, 512, 8, 8, 8, 8, 8, 2, 2, 2, 1],
    ("max", 1): [32, 16, 16, 16, 8, 8, 8, 8, 8, 128, 256, 4, 4, 4, 4, 4, 1, 1, 1, 0.5],
    ("most_recent", 0): [64, 32, 128, 128, 16, 16, 256, 512, 512, 512, 512, 8, 8, 8, 8, 8, 2,
                         149.3333282470703, FLT_MAX, 1],  # 448 / 3 in FP32
    ("most_recent", 1): [32, 16, 64, 64, 8, 8, 128, 256, 256, 256, 256, 4, 4, 4, 4, 4, 1,
                         74.66666412353516, FLT_MAX, 0.5],  # 224 / 3 in FP32
}


@pytest.mark.parametrize("algo,margin", list(EXPECTED_SCALES))
def test_delayed_scaling_trajectory(algo, margin):
    ds = nibble.DelayedScaling(history_len=4, algo=algo, margin=margin, fmt="e4m3")
    assert ds.scale == 1.0 and ds.amax_history.tolist() == [0.0] * 4
    got = []
    for amaxes in STEP_AMAXES:
        for a in amaxes:
            ds.record(a)
        s = ds.update()
        assert s == ds.scale
        got.append(s)
    assert got == EXPECTED_SCALES[(algo, margin)]
    # After the last update: rolled by one, slot 0 cleared (TE: the newest amax sits in the last slot).
    assert ds.amax_history.tolist() == [0.0, 3.0, float(F32(TINY)), 448.0]
    # The Python-side model of the spec agrees.
    ref = R.DelayedScalingRef(4, algo, margin, "e4m3")
    for amaxes in STEP_AMAXES:
        for a in amaxes:
            ref.record(a)
        ref.update()
    assert float(ref.scale) == got[-1]


def test_delayed_scaling_record_update_and_defaults():
    ds = nibble.DelayedScaling()
    assert ds.amax_history.dtype == torch.float32 and tuple(ds.amax_history.shape) == (1024,)
    ds.record(2.0)
    ds.record(1.0)  # max with what is already in slot 0
    h = ds.amax_history
    assert h[0].item() == 2.0
    h[0] = 100.0  # a copy: the state is unchanged
    assert ds.amax_history[0].item() == 2.0
    assert ds.update() == 224.0
    e5 = nibble.DelayedScaling(history_len=2, fmt="e5m2")
    e5.record(7.0)
    assert e5.update() == float(F32(57344.0) / F32(7.0))
    with pytest.raises(ValueError):
        nibble.DelayedScaling(algo="mean")


def test_quantize_with_delayed_state_uses_its_scale_and_records_the_amax():
    ds = nibble.DelayedScaling(history_len=4, algo="max")
    x = torch.randn(48, 80) * 5
    q1 = nibble.quantize(x, "fp8_tensor", delayed=ds)  # scale 1 at first
    want = R.fp8_tensor(x, "e4m3", scale=1.0)["rowwise"]
    assert_copy_equal(q1, want, "delayed step 1", "fp8_tensor", "e4m3")
    amax = float(x.abs().max())
    assert ds.amax_history[0].item() == amax
    assert ds.update() == float(F32(448.0) / F32(amax))
    y = torch.randn(48, 80) * 50  # saturates with the stale scale: that is delayed scaling
    q2 = nibble.quantize(y, "fp8_tensor", delayed=ds, columnwise=True, rounding="stochastic", seed=3)
    want = R.fp8_tensor(y, "e4m3", scale=ds.scale, columnwise=True, rounding="stochastic", seed=3)
    assert_copy_equal(q2, want["rowwise"], "delayed step 2", "fp8_tensor", "e4m3")
    assert_copy_equal(q2.columnwise, want["columnwise"], "delayed step 2 columnwise", "fp8_tensor", "e4m3")
    assert (q2.data == 0x7E).sum() + (q2.data == 0xFE).sum() > 0
    assert ds.amax_history[0].item() == float(y.abs().max())


# ---------------------------------------------------------------------------------------------------------
# 7. Inf and NaN input
# ---------------------------------------------------------------------------------------------------------

MAX_CODE = {"e4m3": 0x7E, "e5m2": 0x7B, "e2m1": 0x7}
SIGN_BIT = {"e4m3": 0x80, "e5m2": 0x80, "e2m1": 0x8}


def _codes(copy, fmt):
    d = copy.data.numpy()
    return R.unpack_fp4(d, copy.shape[1]) if fmt == "e2m1" else d


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_inf_input_saturates_and_never_gives_nan(config, dtype):
    scheme, kw, ref, fmt = CONFIGS[config]
    x = torch.randn(64, 128).to(dtype)
    x[3, 17] = INF
    x[40, 100] = -INF
    q = nibble.quantize(x, scheme, columnwise=True, **kw)
    for name, copy, pos_inf, neg_inf in [("rowwise", q, (3, 17), (40, 100)),
                                         ("columnwise", q.columnwise, (17, 3), (100, 40))]:
        codes = _codes(copy, fmt)
        if fmt == "e4m3":
            assert not np.isin(codes, [0x7F, 0xFF]).any(), f"{name}: NaN code"
        if fmt == "e5m2":
            assert not ((codes & 0x7F) >= 0x7C).any(), f"{name}: Inf/NaN code"
        transformed = scheme == "mxfp4_quest" or (name == "columnwise" and kw.get("rht"))
        if not transformed:
            assert codes[pos_inf] == MAX_CODE[fmt], f"{name}: +Inf -> {codes[pos_inf]:#x}"
            assert codes[neg_inf] == MAX_CODE[fmt] | SIGN_BIT[fmt], f"{name}: -Inf -> {codes[neg_inf]:#x}"
            deq = copy.dequantize().numpy()
            assert deq[pos_inf] > 0 and deq[neg_inf] < 0
        assert float(copy.global_amax) == INF
        assert not torch.isnan(copy.dequantize()).any(), f"{name}: NaN after dequantize"
        s = copy.scale.numpy()
        if s.dtype == np.float32:
            assert np.isfinite(s).all() and (s > 0).all()
        elif scheme in ("nvfp4", "nvfp4_2d"):
            assert not (s == 0x7F).any()  # the UE4M3 NaN code
        else:
            assert not (s == 0xFF).any()  # the E8M0 NaN code
        if scheme not in ("fp8_tensor", "fp8_tensor_e5m2"):
            # finite rows far from the Inf blocks are quantized normally
            assert np.abs(copy.dequantize().numpy()[60]).max() > 0.1


@pytest.mark.parametrize("scheme,kw", [("nvfp4", dict(rht=True, columnwise=True, rowwise=False)),
                                       ("mxfp4_quest", dict())])
def test_opposite_infs_in_one_hadamard_group(scheme, kw):
    """+Inf and -Inf in one transform group make Inf - Inf = NaN inside the transform. The spec leaves this case
    open; it must not leak NaN: either a ValueError or a NaN-free result."""
    x = torch.randn(32, 64)
    if scheme == "nvfp4":
        x[0, 3], x[1, 3] = INF, -INF  # one 16-group of the columnwise copy (column 3 of x)
    else:
        x[0, 3], x[0, 4] = INF, -INF  # one 32-group of the rowwise copy
    try:
        q = nibble.quantize(x, scheme, **kw)
    except ValueError:
        return
    copy = q.columnwise if scheme == "nvfp4" else q
    assert not torch.isnan(copy.dequantize()).any()
    assert not torch.isnan(copy.global_amax)


@pytest.mark.parametrize("scheme", list(nibble.SCHEMES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_nan_input_is_a_value_error_naming_tensor_and_position(scheme, dtype):
    x = torch.randn(20, 64).to(dtype)
    x[9, 2] = float("nan")
    x[7, 11] = float("nan")  # the first in row-major order
    for kw in [dict(), dict(rowwise=False, columnwise=scheme != "mxfp4_quest"), dict(rounding="stochastic")]:
        if not kw.get("rowwise", True) and not kw.get("columnwise", False):
            continue
        with pytest.raises(ValueError, match=r"grad_out") as info:
            nibble.quantize(x, scheme, name="grad_out", **kw)
        assert "(7, 11)" in str(info.value), str(info.value)
    # N-D input: the position is given in the flattened (M, K) matrix.
    y = torch.randn(2, 10, 64).to(dtype)
    y[1, 2, 11] = float("nan")
    with pytest.raises(ValueError, match=r"\(12, 11\)"):
        nibble.quantize(y, scheme, name="act")


def test_invalid_arguments_are_value_errors():
    x = torch.randn(32, 64)
    for kw in [dict(rounding="up"), dict(mx_scale_rule="even"), dict(fmt="bf16"), dict(fmt="e9m9")]:
        with pytest.raises(ValueError):
            nibble.quantize(x, "mxfp8", **kw)
    with pytest.raises(ValueError, match="e2m1"):
        nibble.quantize(x, "nvfp4", fmt="e4m3")
    with pytest.raises(ValueError, match="fp8_tensor"):
        nibble.quantize(x, "fp9")
    with pytest.raises(ValueError):
        nibble.quantize(x, "nvfp4", rowwise=False, columnwise=False)
    with pytest.raises(ValueError, match="rht"):
        nibble.quantize(x, "mxfp4", columnwise=True, rht=True)
    with pytest.raises(ValueError):
        nibble.quantize(x, "fp8_block128", delayed=nibble.DelayedScaling())
    with pytest.raises((TypeError, ValueError), match="(?i)double|float64"):
        nibble.quantize(x.double(), "mxfp8")


# ---------------------------------------------------------------------------------------------------------
# 8. torchao's reference quantizers
# ---------------------------------------------------------------------------------------------------------


def _torchao_mx():
    try:
        from torchao.prototype.mx_formats.config import ScaleCalculationMode
        from torchao.prototype.mx_formats.mx_tensor import to_mx
    except Exception as exc:  # pragma: no cover - depends on the installed torchao
        pytest.skip(f"torchao.prototype.mx_formats.to_mx cannot be imported on this machine: {exc!r}")
    return to_mx, ScaleCalculationMode


def _torchao_nvfp4():
    try:
        from torchao.prototype.mx_formats.nvfp4_tensor import nvfp4_quantize, per_tensor_amax_to_scale
    except Exception as exc:  # pragma: no cover
        pytest.skip(f"torchao.prototype.mx_formats.nvfp4_tensor cannot be imported on this machine: {exc!r}")
    return nvfp4_quantize, per_tensor_amax_to_scale


MX_ELEMS = {"e4m3": "float8_e4m3fn", "e5m2": "float8_e5m2", "e2m1": "float4_e2m1fn_x2"}


def _wide_input(dtype, seed):
    """Normal values with per-row magnitudes 2^-20 .. 2^20: far from E8M0 / FP32 range limits."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(128, 256, generator=g) * torch.exp2(torch.randint(-20, 21, (128, 1), generator=g).float())
    return x.to(dtype)


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2", "e2m1"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("mode,rule", [("FLOOR", "floor"), ("RCEIL", "ceil")])
def test_mx_matches_torchao(fmt, dtype, mode, rule):
    """torchao FLOOR = OCP rule = nibble floor; torchao RCEIL (2^ceil(log2(amax / max_elem))) = TE's ceil rule for
    block maxima in the normal range. Both copies: torchao quantizes x^T for the columnwise one."""
    to_mx, SCM = _torchao_mx()
    x = _wide_input(dtype, seed=1)
    scheme, kw = ("mxfp4", {}) if fmt == "e2m1" else ("mxfp8", dict(fmt=fmt))
    q = nibble.quantize(x, scheme, columnwise=True, mx_scale_rule=rule, **kw)
    for name, src, copy in [("rowwise", x, q), ("columnwise", x.t().contiguous(), q.columnwise)]:
        s, d = to_mx(src, getattr(torch, MX_ELEMS[fmt]), 32, scaling_mode=getattr(SCM, mode))
        assert_same_array(copy.scale, s.view(torch.uint8).numpy(), f"torchao {mode} {fmt} {name} scale")
        assert_same_array(copy.data, d.view(torch.uint8).numpy(), f"torchao {mode} {fmt} {name} data")


def test_mx_rules_differ_from_torchao_ceil_and_ocp_floor_where_documented():
    """Block amax 500 (E4M3): OCP floor -> scale 2^0 and 500 saturates to 448 (nibble floor = torchao FLOOR);
    TE ceil -> 2^1 (nibble default = torchao RCEIL). Block amax 300: TE ceil uses 448, 300/448 < 1 -> 2^0, while
    torchao's CEIL rounds log2(amax) up and subtracts 8 (i.e. uses 256) -> 2^1."""
    to_mx, SCM = _torchao_mx()
    x = torch.zeros(2, 32)
    x[0, 0], x[0, 1] = 500.0, 1.0
    x[1, 0], x[1, 1] = 300.0, 1.0
    floor = nibble.quantize(x, "mxfp8", mx_scale_rule="floor")
    ceil = nibble.quantize(x, "mxfp8")
    tao = {m: to_mx(x, torch.float8_e4m3fn, 32, scaling_mode=getattr(SCM, m)) for m in ("FLOOR", "RCEIL", "CEIL")}
    sc = {m: tao[m][0].view(torch.uint8)[:, 0].tolist() for m in tao}
    assert floor.scale[:, 0].tolist() == sc["FLOOR"] == [127, 127]
    assert ceil.scale[:, 0].tolist() == sc["RCEIL"] == [128, 127]
    assert sc["CEIL"] == [128, 128]  # differs from TE's ceil on the 300 block
    assert floor.data[0, 0].item() == tao["FLOOR"][1].view(torch.uint8)[0, 0].item() == 0x7E  # 500 -> 448
    assert floor.dequantize()[0, 0].item() == 448.0 and ceil.dequantize()[0, 0].item() == 512.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("k", [-5, 0, 3])
def test_nvfp4_matches_torchao_when_the_global_scale_is_a_power_of_two(dtype, k):
    """With global amax = 2688 * 2^k, TE's S_enc = 2^-k and torchao's per-tensor scale = 2^k are exact, and the two
    orders of rounding (S_enc * (1/6) folded vs (amax / 6) / per_tensor_scale) give the same codes: data and
    UE4M3 block scales are bit-identical (blocks stay above torchao's E4M3_EPS floor here)."""
    nvfp4_quantize, per_tensor_amax_to_scale = _torchao_nvfp4()
    g = torch.Generator().manual_seed(k + 10)
    top = 2688.0 * 2.0**k
    x = torch.randn(128, 256, generator=g)
    x = x / x.abs().max() * (0.95 * top)
    x[5, 9] = -top
    x = x.to(dtype)
    assert float(x.float().abs().max()) == top
    q = nibble.quantize(x, "nvfp4", columnwise=True)
    for name, src, copy in [("rowwise", x, q), ("columnwise", x.t().contiguous(), q.columnwise)]:
        s, d = nvfp4_quantize(src, 16, per_tensor_amax_to_scale(src.float().abs().max()))
        assert_same_array(copy.scale, s.view(torch.uint8).numpy(), f"torchao nvfp4 {name} scale")
        assert_same_array(copy.data, d.view(torch.uint8).numpy(), f"torchao nvfp4 {name} data")
        assert (copy.scale.numpy() >= 8).all()


def test_nvfp4_differs_from_torchao_where_documented():
    """(1) torchao floors every block scale at E4M3_EPS = 2^-6 (code 8); TE/nibble let a small block's scale go
    subnormal or to 0. (2) TE folds 1/6 into the global multiplier: s = e4m3(amax_b * (S_enc * (1/6))); torchao
    computes (amax_b / 6) / (global_amax / 2688), which lands on the other side of an E4M3 midpoint here."""
    nvfp4_quantize, per_tensor_amax_to_scale = _torchao_nvfp4()

    def both(x):
        s, d = nvfp4_quantize(x, 16, per_tensor_amax_to_scale(x.abs().max()))
        return nibble.quantize(x, "nvfp4"), s.view(torch.uint8)

    x = torch.zeros(1, 48)
    x[0, 0] = 100.0
    x[0, 16] = 0.002  # block scale 0.002 * (26.88 / 6) = 0.00896 -> subnormal E4M3: 4.59 * 2^-9 -> code 5
    q, s = both(x)
    assert q.scale.tolist() == [[0x7E, 5, 0]] == [R.nvfp4(x)["rowwise"]["scale"][0].tolist()]
    assert s.tolist() == [[0x7E, 8, 8]]

    g, b = F32(123.456), F32(0.0056513674)
    x = torch.zeros(1, 32)
    x[0, 0], x[0, 16] = float(g), float(b)
    q, s = both(x)
    s_enc, _ = R.nvfp4_global(g)
    ours = int(R.nvfp4_block_codes(np.array([b]), s_enc)[0])
    theirs = int(R.cast_rne(np.array([F32(b / F32(6.0)) / F32(g / F32(2688.0))]), "e4m3")[0])
    assert (ours, theirs) == (11, 10)
    assert q.scale[0, 1].item() == ours and s[0, 1].item() == theirs


def test_nvfp4_agrees_with_torchao_on_typical_data():
    """General float32 data: the rounding orders differ but almost never matter."""
    nvfp4_quantize, per_tensor_amax_to_scale = _torchao_nvfp4()
    x = torch.randn(256, 512, generator=torch.Generator().manual_seed(3)) * 3
    q = nibble.quantize(x, "nvfp4")
    s, d = nvfp4_quantize(x, 16, per_tensor_amax_to_scale(x.abs().max()))
    assert (q.scale != s.view(torch.uint8)).float().mean() < 1e-3
    assert (q.data != d.view(torch.uint8)).float().mean() < 1e-3
