"""Stochastic rounding of a slice given its place in the whole tensor (nibble.quantize(sr_index=...),
precision::SrIndexMap): a tensor-parallel shard (columns) or a sequence-parallel slice (rows) quantized on its
own must give exactly the codes of the same elements of the whole tensor, whose stochastic rounding is checked
bit for bit against the independent reference in test_quantize.py. Block scales are local to a block, so the
slices are block-aligned; per-tensor factors (the NVFP4 global amax) are made equal by planting the tensor's
amax in every slice, as the tensor-parallel group amax does in training.
"""
import pytest
import torch

import nibble

ROWS, COLS = 64, 96


def whole_tensor(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(ROWS, COLS, generator=g)
    x[0, :] = x[0, :].clamp(-3, 3)
    x[:, 0] = x[:, 0].clamp(-3, 3)
    for r in range(0, ROWS, 32):      # the same amax (8) in every row slice and every column slice below
        for c in range(0, COLS, 32):
            x[r + 1, c + 1] = 8.0
    return x


def codes(q, which):
    copy = q if which == "row" else q.columnwise
    return copy.data


def quantize(x, scheme, **kw):
    return nibble.quantize(x, scheme, rowwise=True, columnwise=True, rounding="stochastic", seed=11, offset=5, **kw)


def byte_cols(scheme, start, count):
    """Byte range of `count` elements from `start` along a copy's rows (FP4 packs two per byte)."""
    per = 2 if scheme in ("nvfp4", "mxfp4") else 1
    return slice(start // per, (start + count) // per)


@pytest.mark.parametrize("scheme", ["mxfp8", "mxfp4", "nvfp4"])
def test_column_slices_round_like_the_whole_tensor(scheme):
    x = whole_tensor(1)
    full = quantize(x, scheme)
    for c0 in range(0, COLS, 32):
        part = quantize(x[:, c0:c0 + 32].contiguous(), scheme, sr_index=(ROWS, COLS, 0, c0))
        assert torch.equal(codes(part, "row"), codes(full, "row")[:, byte_cols(scheme, c0, 32)]), c0
        assert torch.equal(codes(part, "col"), codes(full, "col")[c0:c0 + 32]), c0


@pytest.mark.parametrize("scheme", ["mxfp8", "mxfp4", "nvfp4"])
def test_row_slices_round_like_the_whole_tensor(scheme):
    x = whole_tensor(2)
    full = quantize(x, scheme)
    for r0 in range(0, ROWS, 32):
        part = quantize(x[r0:r0 + 32].contiguous(), scheme, sr_index=(ROWS, COLS, r0, 0))
        assert torch.equal(codes(part, "row"), codes(full, "row")[r0:r0 + 32]), r0
        assert torch.equal(codes(part, "col"), codes(full, "col")[:, byte_cols(scheme, r0, 32)]), r0


def test_without_the_map_a_slice_draws_other_bits():
    """The checks above are not vacuous: a slice keyed by its own indices rounds some elements differently."""
    x = whole_tensor(3)
    full = quantize(x, "mxfp4")
    part = quantize(x[:, 32:64].contiguous(), "mxfp4")
    assert not torch.equal(codes(part, "row"), codes(full, "row")[:, 16:32])


def test_identity_map_equals_no_map():
    x = whole_tensor(4)
    a, b = quantize(x, "nvfp4"), quantize(x, "nvfp4", sr_index=(ROWS, COLS, 0, 0))
    assert torch.equal(codes(a, "row"), codes(b, "row")) and torch.equal(codes(a, "col"), codes(b, "col"))


@pytest.mark.parametrize("sr_index,message", [
    ((64, 96, 0, 80), "places 32 columns at column 80 of a tensor with 96 columns"),
    ((64, 96, 64, 0), "row offset 64 is outside the 64 rows"),
    ((0, 0, 0, 8), "col_offset 8 needs full_cols"),
    ((0, 0, 8, 0), "row_offset 8 needs full_rows"),
    ((64, -1, 0, 0), "must be >= 0"),
])
def test_bad_maps_are_rejected_with_the_reason(sr_index, message):
    with pytest.raises(ValueError, match=message):
        quantize(torch.randn(32, 32), "mxfp4", sr_index=sr_index)


# ---- group_amax: a slice takes the whole tensor's per-tensor factor (what tensor parallelism uses) ----

@pytest.mark.parametrize("scheme", ["fp8_tensor", "nvfp4", "nvfp4_2d"])
def test_a_slice_with_the_group_amax_quantizes_as_the_whole_tensor(scheme):
    x = torch.randn(64, 128, generator=torch.Generator().manual_seed(4))
    x[40, 7] = 30.0  # the whole tensor's amax lies in the second half
    whole = nibble.quantize(x, scheme)
    top = x[:32].contiguous()
    part = nibble.quantize(top, scheme, group_amax=float(x.abs().max()))
    assert torch.equal(part.data, whole.data[:32])
    assert torch.equal(part.scale, whole.scale if scheme == "fp8_tensor" else whole.scale[:32])
    assert torch.equal(part.global_amax, whole.global_amax)
    alone = nibble.quantize(top, scheme)
    assert not torch.equal(alone.data, whole.data[:32])  # without it the slice has its own scale


def test_the_rht_copy_takes_the_groups_amax_after_the_transform():
    x = torch.randn(64, 32, generator=torch.Generator().manual_seed(5))
    x[50, 3] = 40.0
    whole = nibble.quantize(x, "nvfp4", rowwise=False, columnwise=True, rht=True)
    cols = x[:, :16].contiguous()  # a column slice: its columnwise copy is rows 0..15 of the whole one
    col_amax = nibble.quantize(x, "nvfp4", rowwise=False, columnwise=True, rht=True).columnwise.global_amax
    part = nibble.quantize(cols, "nvfp4", rowwise=False, columnwise=True, rht=True,
                           group_amax=float(x.abs().max()), group_rht_amax=float(col_amax))
    assert torch.equal(part.columnwise.data, whole.columnwise.data[:16])
    assert torch.equal(part.columnwise.global_amax, whole.columnwise.global_amax)


def test_group_amax_is_refused_where_it_cannot_apply():
    x = torch.randn(32, 64)
    with pytest.raises(ValueError, match="group_amax sets a per-tensor factor: it applies to fp8_tensor"):
        nibble.quantize(x, "mxfp8", group_amax=4.0)
    with pytest.raises(ValueError, match="is below this input's own amax"):
        nibble.quantize(x, "fp8_tensor", group_amax=float(x.abs().max()) / 2)
    with pytest.raises(ValueError, match="group_rht_amax applies to an RHT'd columnwise copy"):
        nibble.quantize(x, "nvfp4", group_rht_amax=4.0)
    with pytest.raises(ValueError, match="must be finite"):
        nibble.quantize(x, "nvfp4", group_amax=float("inf"))
