"""FP64 accumulation (nibble.set_fp64_accumulation, nibble-train's parallel.reproducible_sums): the GEMM sums its
products in FP64 and rounds once, so a K split (tensor-parallel partial sums added by the group) gives the
unsplit result bit for bit. Oracle: torch's float64 matmul of the same operand values (BF16-rounded dense
operands, dequantized copies), whose sums are exact for these magnitudes.
"""
import pytest
import torch

import nibble


@pytest.fixture
def fp64_sums():
    nibble.set_fp64_accumulation(True)
    yield
    nibble.set_fp64_accumulation(False)


def operands(seed, m=48, n=40, k=256):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, k, generator=g), torch.randn(n, k, generator=g) * 3


def test_dense_operands_are_bf16_values_summed_exactly(fp64_sums):
    a, b = operands(1)
    want = (a.bfloat16().double() @ b.bfloat16().double().T).float()
    assert torch.equal(nibble.gemm(a, b), want)


def test_mxfp8_operands_are_their_values_summed_exactly(fp64_sums):
    a, b = operands(2)
    qa, qb = nibble.quantize(a, "mxfp8"), nibble.quantize(b, "mxfp8")  # power-of-two scales: exact dequantize
    want = (qa.dequantize().double() @ qb.dequantize().double().T).float()
    assert torch.equal(nibble.gemm(qa, qb), want)


def test_fp8_tensor_sums_the_codes_then_applies_both_scales(fp64_sums):
    """Transformer Engine's order: the E4M3 codes' products summed, times scale_inv_a * scale_inv_b."""
    a, b = operands(5)
    qa, qb = nibble.quantize(a, "fp8_tensor"), nibble.quantize(b, "fp8_tensor")
    ca, cb = nibble.decode(qa.data, "e4m3").double(), nibble.decode(qb.data, "e4m3").double()
    alpha = float(qa.scale.reshape(-1)[0]) * float(qb.scale.reshape(-1)[0])  # FP32 scales, product in FP64
    want = ((ca @ cb.T) * alpha).float()
    assert torch.equal(nibble.gemm(qa, qb), want)


@pytest.mark.parametrize("parts", [2, 4])
def test_a_k_split_added_in_fp64_rounds_to_the_unsplit_result(fp64_sums, parts):
    a, b = operands(3)
    full = nibble.gemm(a, b)
    partial = sum(nibble.gemm(x.contiguous(), y.contiguous(), out_dtype=torch.float64)
                  for x, y in zip(a.chunk(parts, 1), b.chunk(parts, 1)))
    assert partial.dtype == torch.float64
    assert torch.equal(partial.float(), full)


def test_fp32_accumulation_is_order_dependent_so_the_check_above_is_not_vacuous():
    a, b = operands(3)
    full = nibble.gemm(a, b)
    halves = [nibble.gemm(x.contiguous(), y.contiguous()) for x, y in zip(a.chunk(2, 1), b.chunk(2, 1))]
    assert not torch.equal(halves[0] + halves[1], full)


def test_float64_output_needs_the_mode():
    a, b = operands(4)
    with pytest.raises(ValueError, match="float64 only under fp64_accumulation"):
        nibble.gemm(a, b, out_dtype=torch.float64)
