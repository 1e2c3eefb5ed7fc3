"""nibble.gemm: every scheme against an FP64 matmul of the dequantized operands (relative Frobenius error
<= 1e-5, NUMERICS.md), on odd, non-square and large-K shapes, mixed formats, bias and accumulate."""
import pytest
import torch

import nibble

SHAPES = [(1, 1, 32), (37, 19, 96), (130, 65, 256), (64, 48, 4096)]


def rel_err(c, ref):
    return ((c.double() - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def reference(qa, qb):
    return qa.dequantize().double() @ qb.dequantize().double().T


@pytest.mark.parametrize("scheme", nibble.SCHEMES)
@pytest.mark.parametrize("shape", SHAPES)
def test_gemm_matches_fp64_of_dequantized_operands(scheme, shape):
    m, n, k = shape
    g = torch.Generator().manual_seed(m * 1000 + n + k)
    a, b = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g) * 3
    qa, qb = nibble.quantize(a, scheme), nibble.quantize(b, scheme)
    c = nibble.gemm(qa, qb)
    assert c.shape == (m, n) and c.dtype == torch.float32
    assert rel_err(c, reference(qa, qb)) <= 1e-5


@pytest.mark.parametrize("scheme", ["fp8_tensor", "nvfp4", "mxfp8", "fp8_block128"])
def test_columnwise_copies_feed_the_wgrad_gemm(scheme):
    # dW = dyᵀ x from the two columnwise copies (blocks along the token dimension M).
    g = torch.Generator().manual_seed(1)
    x, dy = torch.randn(64, 40, generator=g), torch.randn(64, 24, generator=g)
    qx = nibble.quantize(x, scheme, rowwise=False, columnwise=True)
    qdy = nibble.quantize(dy, scheme, rowwise=False, columnwise=True, rounding="stochastic", seed=3)
    dw = nibble.gemm(qdy.columnwise, qx.columnwise)
    ref = qdy.columnwise.dequantize().double() @ qx.columnwise.dequantize().double().T
    assert dw.shape == (24, 40)
    assert rel_err(dw, ref) <= 1e-5
    # and it approximates the exact dyᵀx within the format's sanity bound (TE's E2M1/E4M3 tables)
    exact = dy.double().T @ x.double()
    assert rel_err(dw, exact) < (0.25 if "fp4" in scheme else 0.125)


def test_nvfp4_wgrad_with_rht_preserves_the_product():
    g = torch.Generator().manual_seed(2)
    x, dy = torch.randn(128, 32, generator=g), torch.randn(128, 16, generator=g)
    qx = nibble.quantize(x, "nvfp4", rowwise=False, columnwise=True, rht=True)
    qdy = nibble.quantize(dy, "nvfp4", rowwise=False, columnwise=True, rht=True)
    dw = nibble.gemm(qdy.columnwise, qx.columnwise)
    exact = dy.double().T @ x.double()
    assert rel_err(dw, exact) < 0.25  # the transforms cancel; only FP4 quantization error remains


def test_mixed_e4m3_by_e5m2():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(33, 160, generator=g), torch.randn(17, 160, generator=g)
    qa, qb = nibble.quantize(a, "fp8_tensor"), nibble.quantize(b, "fp8_tensor_e5m2")
    assert rel_err(nibble.gemm(qa, qb), reference(qa, qb)) <= 1e-5
    qa, qb = nibble.quantize(a, "mxfp8"), nibble.quantize(b, "mxfp8", fmt="e5m2")
    assert rel_err(nibble.gemm(qa, qb), reference(qa, qb)) <= 1e-5


def test_non_power_of_two_block_scales_take_the_fp32_path_exactly():
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(70, 300, generator=g), torch.randn(50, 300, generator=g)
    qa = nibble.quantize(a, "fp8_block128", pow2_scale=False)
    qb = nibble.quantize(b, "fp8_block128", pow2_scale=False)
    assert rel_err(nibble.gemm(qa, qb), reference(qa, qb)) <= 1e-5


def test_bias_accumulate_and_bf16_output():
    g = torch.Generator().manual_seed(5)
    a, b, bias = torch.randn(20, 64, generator=g), torch.randn(12, 64, generator=g), torch.randn(12, generator=g)
    qa, qb = nibble.quantize(a, "nvfp4"), nibble.quantize(b, "nvfp4")
    ref = reference(qa, qb)
    c = nibble.gemm(qa, qb, bias=bias)
    assert rel_err(c, ref + bias.double()) <= 1e-5
    acc = torch.randn(20, 12, generator=g)
    start = acc.clone()
    out = nibble.gemm(qa, qb, accumulate=acc)
    assert out.data_ptr() == acc.data_ptr()
    assert rel_err(acc, ref + start.double()) <= 1e-5
    c16 = nibble.gemm(qa, qb, out_dtype=torch.bfloat16)
    assert c16.dtype == torch.bfloat16
    assert torch.equal(c16, nibble.gemm(qa, qb).to(torch.bfloat16))


def test_high_precision_operands_round_to_bf16():
    g = torch.Generator().manual_seed(6)
    a, b = torch.randn(45, 77, generator=g), torch.randn(31, 77, generator=g)
    ref = a.bfloat16().double() @ b.bfloat16().double().T
    assert rel_err(nibble.gemm(a, b), ref) <= 1e-5
    assert rel_err(nibble.gemm(a.bfloat16(), b.bfloat16()), ref) <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_column_major_operands_give_the_row_major_bits(dtype):
    # The backward passes dyᵀ, xᵀ and Wᵀ as views (core/linear.cpp); the GEMM transposes them tile by tile while
    # packing (core/gemm.cpp column_major_source). Sizes off every step of that tiling (64 rows, 8 columns),
    # values across BF16's rounding ties, NaN-free.
    g = torch.Generator().manual_seed(7)
    a_t, b_t = torch.randn(133, 70, generator=g).to(dtype), torch.randn(133, 45, generator=g).to(dtype)
    a_t[5, 3], b_t[7, 2] = 3.0e38, -1.0e-40  # overflow to ±max in BF16 and a subnormal
    expected = nibble.gemm(a_t.t().contiguous(), b_t.t().contiguous())
    assert torch.equal(nibble.gemm(a_t.t(), b_t.t()), expected)
    assert torch.equal(nibble.gemm(a_t.t(), b_t.t().contiguous()), expected)
    assert torch.equal(nibble.gemm(a_t.t().contiguous(), b_t.t()), expected)


def test_shape_errors_name_both_operands():
    qa = nibble.quantize(torch.randn(4, 64), "mxfp8")
    qb = nibble.quantize(torch.randn(4, 96), "mxfp8")
    with pytest.raises(ValueError, match=r"inner dimensions differ.*\(4, 64\).*\(4, 96\)"):
        nibble.gemm(qa, qb)
    with pytest.raises(ValueError, match="bias must have shape"):
        nibble.gemm(qa, qa, bias=torch.zeros(5))
    with pytest.raises(ValueError, match="accumulate must be"):
        nibble.gemm(qa, qa, accumulate=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="dtype"):
        nibble.gemm(torch.zeros(4, 64, dtype=torch.float64), qa)


# ---- which kernel runs a GEMM on which device (core/gemm_path.h), as nibble-train prints it ----

def test_gemm_path_names_the_kernel_per_device():
    assert nibble.gemm_path("nvfp4") == "CPU emulation (exact BF16 decode, FP32 sums)"
    assert nibble.gemm_path("nvfp4", "cuda", capability=(10, 0)) == "cuBLASLt NVFP4 (VEC16_UE4M3)"
    assert nibble.gemm_path("nvfp4", "cuda", capability=(9, 0)) == "device dequantize + cuBLAS BF16"
    assert nibble.gemm_path("mxfp8", "cuda:0", capability=(10, 0)) == "cuBLASLt MXFP8 (VEC32_UE8M0)"
    assert nibble.gemm_path("fp8_tensor", "cuda", b="fp8_tensor_e5m2", capability=(9, 0)) == "cuBLASLt FP8 per-tensor"
    assert nibble.gemm_path("fp8_block128", "cuda", b="fp8_block128x128", capability=(9, 0)).startswith(
        "cuBLASLt FP8 block")
    assert nibble.gemm_path("mxfp4", "cuda", capability=(10, 0)) == "device dequantize + cuBLAS BF16"


def test_gemm_paths_of_a_recipe_cover_its_three_gemms():
    paths = nibble.gemm_paths("fp8_current", "cuda", capability=(9, 0))
    assert paths == {"fprop": "cuBLASLt FP8 per-tensor", "dgrad": "cuBLASLt FP8 per-tensor",
                     "wgrad": "cuBLASLt FP8 per-tensor"}
    assert set(nibble.gemm_paths(nibble.Recipe("bf16")).values()) == {"CPU emulation (exact BF16 decode, FP32 sums)"}


def test_gemm_path_refuses_what_it_cannot_answer():
    with pytest.raises(ValueError, match="capability= is for a CUDA device"):
        nibble.gemm_path("nvfp4", "cpu", capability=(9, 0))
    with pytest.raises(ValueError, match="'cpu' or 'cuda"):
        nibble.gemm_path("nvfp4", "meta")
    with pytest.raises(ValueError, match="scheme"):
        nibble.gemm_path("fp7")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device is visible"):
            nibble.gemm_path("nvfp4", "cuda")


def test_operands_on_two_devices_are_named():
    a = torch.randn(8, 32)
    with pytest.raises(ValueError, match="operands are on different devices: A on cpu, B on meta"):
        nibble.gemm(a, torch.empty(8, 32, device="meta"))
    with pytest.raises(ValueError, match="operands are on meta; nibble's GEMM runs on CPU and CUDA tensors"):
        nibble.gemm(torch.empty(8, 32, device="meta"), torch.empty(8, 32, device="meta"))
