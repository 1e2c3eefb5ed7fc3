#pragma once
// Quantization that agrees across a tensor-parallel group, and the all-gather of quantized copies (FP8 /
// NVFP4 all-gather under sequence parallelism).
//
// Group amax. A per-tensor factor -- the FP8 per-tensor scale, the NVFP4 global amax (S_enc) -- is taken from
// the max over the group of the local amaxes (one all-reduce(max) of a few floats), so every rank quantizes
// with the scale the whole (gathered or unsharded) tensor would get, and a gathered copy is the one a single
// rank would have produced from the full tensor. Block scales (MXFP8, MXFP4, FP8 1x128, NVFP4 blocks) are
// local by construction as long as no block straddles two ranks' parts. The quantizer takes the group's amax
// (and, for an RHT'd copy, the group's amax after the transform) as precision::QuantizeOptions::group_amax /
// group_rht_amax; each rank learns its own with core::tensor_amax, one read of its input.
//
// What all_gather_rows moves, per scheme of a copy (rows = tokens; "cols" = the features K):
//  - fp8_tensor (fp8_current): the rowwise E4M3 codes only (1 byte per element). The scale is the group's,
//    identical on every rank, and not sent; the columnwise copy (wgrad operand) is the transpose of the same
//    codes, made locally after the gather.
//  - mxfp8 / mxfp4 / fp8_block128 / nvfp4 (1-D): the rowwise codes + per-row block scales, and the
//    columnwise copy's codes + scales (it is quantized in blocks along the tokens, independently of the
//    rowwise one, or RHT'd for nvfp4), gathered as [K, rows/size] blocks and interleaved locally. This needs
//    rows/size to be a multiple of the block length along the tokens (32, 16 or 128).
//  - The NVFP4 global amaxes are the group's (identical, not sent).
#include <torch/torch.h>

#include <memory>
#include <string>

#include "core/linear.h"
#include "core/linear_operands.h"
#include "parallel/communicator.h"

namespace nibble::parallel::nn {

using core::QuantizedCopies;

// Quantizes t2d [rows, cols] for the quantized ones of `row_spec` / `col_spec` (either may be null), with
// the options of core/linear_operands.h operand_options, as core/linear.cpp quantizes (so a group of
// one reproduces nibble's Linear bit for bit). `comm` non-null: per-tensor factors use the group amax; every
// rank of the group must make the same call. A NaN on any rank fails on every rank (nibble::Error).
// Delayed-scaling specs (fp8_delayed) quantize with `ds`'s scale and record the local amax into it, as
// core/linear.cpp does; nothing is reduced here: the ranks agree on the scale when their histories are
// max-reduced once per step (parallel/nn/amax_reduction.h) before DelayedScaling::update().
// `fail_together`: reduce the NaN flag over `comm` even when no copy has a per-tensor factor (MX schemes), so a
// NaN on one rank fails every rank here instead of leaving its peers in the next collective.
// `sr_index`: t2d's place in the tensor a single rank would quantize (precision::SrIndexMap), so stochastic
// rounding draws that tensor's bits; default: t2d is the whole tensor.
QuantizedCopies quantize_with_group_amax(const torch::Tensor& t2d, const core::OperandSpec* row_spec,
                                         const core::OperandSpec* col_spec, Communicator* comm,
                                         core::LinearState& state, const std::string& name,
                                         precision::DelayedScaling* ds = nullptr, bool fail_together = false,
                                         const precision::SrIndexMap& sr_index = {});

// The place of a rank's slice in the whole tensor: rows [rank*rows, (rank+1)*rows) of a (size*rows, cols)
// tensor, or columns [rank*cols, (rank+1)*cols) of a (rows, size*cols) one.
precision::SrIndexMap row_slice_of(int64_t rows, int64_t cols, int rank, int size);
precision::SrIndexMap col_slice_of(int64_t rows, int64_t cols, int rank, int size);

// Every rank's copies concatenated along the rows (rank r's rows at [r*rows, (r+1)*rows)), as if quantized
// from the concatenated tensor (given group-amax quantization). Throws InvalidArgument when a block along
// the rows would straddle two ranks.
QuantizedCopies all_gather_rows(const QuantizedCopies& local, Communicator& comm, const std::string& name);

// Whether quantizing every rank's [rows, cols] slice (with the group amax, and for stochastic rounding with
// its row_slice_of place) and gathering the copies with all_gather_rows gives bit for bit the copies of the
// gathered tensor. False, with the reason in *why, for QuEST (clip masks), 2-D tiles (16x16 / 128x128 across
// the rows), and a columnwise copy whose blocks along the rows (32, 16 or 128) do not tile `rows`. Null or
// unquantized specs are skipped.
bool gathers_exactly(const core::OperandSpec* row_spec, const core::OperandSpec* col_spec, int64_t rows,
                     std::string* why);

// Bytes one rank hands to all_gather_rows for the copies quantize_with_group_amax makes of a [rows, cols]
// slice with these specs (codes and block scales; per-tensor scales and amaxes are not sent).
int64_t quantized_gather_bytes(const core::OperandSpec* row_spec, const core::OperandSpec* col_spec, int64_t rows,
                               int64_t cols);

using core::same_quantization;

}  // namespace nibble::parallel::nn
