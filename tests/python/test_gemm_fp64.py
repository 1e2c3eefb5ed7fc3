"""FP64 accumulation (nibble.gemm(..., fp64_accumulation=True), a recipe's reproducible_sums, nibble-train's
parallel.reproducible_sums): the GEMM sums its
products in FP64 and rounds once, so a K split (tensor-parallel partial sums added by the group) gives the
unsplit result bit for bit. Oracle: torch's float64 matmul of the same operand values (BF16-rounded dense
operands, dequantized copies), whose sums are exact for these magnitudes.
"""
import functools

import pytest
import torch

import nibble


@pytest.fixture
def gemm64():
    """nibble.gemm with FP64 sums: an option of the call, so nothing else in the process changes."""
    return functools.partial(nibble.gemm, fp64_accumulation=True)


def operands(seed, m=48, n=40, k=256):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, k, generator=g), torch.randn(n, k, generator=g) * 3


def test_dense_operands_are_bf16_values_summed_exactly(gemm64):
    a, b = operands(1)
    want = (a.bfloat16().double() @ b.bfloat16().double().T).float()
    assert torch.equal(gemm64(a, b), want)


def test_mxfp8_operands_are_their_values_summed_exactly(gemm64):
    a, b = operands(2)
    qa, qb = nibble.quantize(a, "mxfp8"), nibble.quantize(b, "mxfp8")  # power-of-two scales: exact dequantize
    want = (qa.dequantize().double() @ qb.dequantize().double().T).float()
    assert torch.equal(gemm64(qa, qb), want)


def test_fp8_tensor_sums_the_codes_then_applies_both_scales(gemm64):
    """Transformer Engine's order: the E4M3 codes' products summed, times scale_inv_a * scale_inv_b."""
    a, b = operands(5)
    qa, qb = nibble.quantize(a, "fp8_tensor"), nibble.quantize(b, "fp8_tensor")
    ca, cb = nibble.decode(qa.data, "e4m3").double(), nibble.decode(qb.data, "e4m3").double()
    alpha = float(qa.scale.reshape(-1)[0]) * float(qb.scale.reshape(-1)[0])  # FP32 scales, product in FP64
    want = ((ca @ cb.T) * alpha).float()
    assert torch.equal(gemm64(qa, qb), want)


@pytest.mark.parametrize("parts", [2, 4])
def test_a_k_split_added_in_fp64_rounds_to_the_unsplit_result(gemm64, parts):
    a, b = operands(3)
    full = gemm64(a, b)
    partial = sum(gemm64(x.contiguous(), y.contiguous(), out_dtype=torch.float64)
                  for x, y in zip(a.chunk(parts, 1), b.chunk(parts, 1)))
    assert partial.dtype == torch.float64
    assert torch.equal(partial.float(), full)


def test_fp32_accumulation_is_order_dependent_so_the_check_above_is_not_vacuous():
    a, b = operands(3)
    full = nibble.gemm(a, b)
    halves = [nibble.gemm(x.contiguous(), y.contiguous()) for x, y in zip(a.chunk(2, 1), b.chunk(2, 1))]
    assert not torch.equal(halves[0] + halves[1], full)


def test_fp64_sums_are_an_option_of_the_call_not_of_the_process(gemm64):
    """Two settings side by side in one process: the option changes only the call that passes it."""
    a, b = operands(3)
    halves = [(x.contiguous(), y.contiguous()) for x, y in zip(a.chunk(2, 1), b.chunk(2, 1))]
    assert torch.equal(gemm64(*halves[0], out_dtype=torch.float64).add(gemm64(*halves[1], out_dtype=torch.float64))
                       .float(), gemm64(a, b))
    assert not torch.equal(nibble.gemm(*halves[0]) + nibble.gemm(*halves[1]), nibble.gemm(a, b))


def test_recipes_carry_reproducible_sums():
    assert not nibble.Recipe("nvfp4").reproducible_sums
    r = nibble.Recipe("nvfp4", reproducible_sums=True)
    assert r.reproducible_sums and r.describe()["reproducible_sums"]


def test_float64_output_needs_the_mode():
    a, b = operands(4)
    with pytest.raises(ValueError, match="float64 only under fp64_accumulation"):
        nibble.gemm(a, b, out_dtype=torch.float64)
