// CPU quantizers for every scheme of docs/QUANTIZATION.md: validation, the public entry points, and the
// order of passes. The work itself is quantize_tiles.cpp's tile pass (a row-order pass when only the
// rowwise copy of a 1-D scheme is asked for). Output buffers get a huge-page hint first (huge_pages.h).
// Passes over the input:
//  - schemes whose scales need the global amax up front (fp8_tensor with current scaling, nvfp4, nvfp4_2d)
//    take it in a first read-only pass; the others measure it during the tile pass;
//  - nvfp4 with RHT takes the columnwise copy's amax after the transform in that same first pass (the
//    transform is recomputed, in cache, by the tile pass rather than stored: storing it would write and
//    read a float32 copy of the whole tensor, more traffic than reading the input again).
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <string>
#include <utility>

#include "precision/block_scale.h"
#include "precision/convert.h"
#include "precision/copy_decoder.h"
#include "precision/cpu/huge_pages.h"
#include "precision/cpu/quantize_tiles.h"
#include "precision/error.h"
#include "precision/format_names.h"
#include "precision/hadamard.h"
#include "precision/quantize.h"
#include "precision/scaling.h"

namespace nibble::precision {
namespace {

using cpu::block_shape;
using cpu::BlockShape;
using cpu::is_2d;
using cpu::is_fp4;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

float input_at(const QuantizeInput& in, int64_t i) {
  if (in.type == InputType::kFloat32) return static_cast<const float*>(in.data)[i];
  return bits_float(static_cast<uint32_t>(static_cast<const uint16_t*>(in.data)[i]) << 16);
}

// A group holding both +Inf and -Inf transforms to NaN: an error, never a silent code.
[[noreturn]] void report_transform_nan(const QuantizeInput& in, const char* transform) {
  throw InvalidArgument(transform_nan_message(in, transform));
}

[[noreturn]] void report_nan(const QuantizeInput& in) {
  for (int64_t i = 0; i < in.rows * in.cols; ++i)
    if (std::isnan(input_at(in, i))) throw InvalidArgument(nan_input_message(in, i / in.cols, i % in.cols));
  throw InvalidArgument("quantize(" + in.name + "): input has NaN");
}

}  // namespace

std::string nan_input_message(const QuantizeInput& in, int64_t row, int64_t col) {
  return "quantize(" + in.name + "): input has NaN at (" + std::to_string(row) + ", " + std::to_string(col) +
         ") of shape (" + std::to_string(in.rows) + ", " + std::to_string(in.cols) + ")";
}

std::string transform_nan_message(const QuantizeInput& in, const char* transform) {
  return "quantize(" + in.name + "): the " + transform +
         " of a group holding both +Inf and -Inf is NaN; the input has infinities of both signs within one "
         "16/32-element group";
}

void validate_quantize(const QuantizeInput& in, const QuantizeOptions& o) {
  const std::string who = "quantize(" + in.name + ", " + scheme_name(o.scheme) + "): ";
  if (in.rows < 0 || in.cols < 0) throw InvalidArgument(who + "negative shape");
  if (!o.rowwise && !o.columnwise) throw InvalidArgument(who + "ask for rowwise, columnwise or both");
  if (is_fp4(o.scheme) && o.element != formats::kE2M1)
    throw InvalidArgument(who + "FP4 schemes use e2m1 elements, got " + format_name(o.element));
  // FP8 schemes also emulate research formats: any signed element format of at most 8 bits.
  if (!is_fp4(o.scheme) && (!o.element.is_signed || o.element.bits() > 8))
    throw InvalidArgument(who + "element format must be signed with at most 8 bits (e4m3, e5m2 or a research "
                          "eXmY), got " + format_name(o.element));
  if (o.rounding == Rounding::kTowardZero) throw InvalidArgument(who + "rounding must be 'rne' or 'stochastic'");
  if (o.rht && o.scheme != Scheme::kNVFP4)
    throw InvalidArgument(who + "rht applies to the 1-D nvfp4 scheme (the wgrad operands x and dy); " +
                          scheme_name(o.scheme) + " does not take it");
  if (o.rht && o.columnwise && in.rows % 16 != 0)
    throw InvalidArgument(who + "the 16-point RHT runs along the first dimension, which must be a multiple of 16; got " +
                          std::to_string(in.rows));
  if (o.scheme == Scheme::kMXFP4Quest) {
    if (o.rowwise && in.cols % 32 != 0)
      throw InvalidArgument(who + "Hadamard-32 groups need the last dimension to be a multiple of 32; got " +
                            std::to_string(in.cols));
    if (o.columnwise && in.rows % 32 != 0)
      throw InvalidArgument(who + "the columnwise Hadamard-32 groups need the first dimension to be a multiple of 32; got " +
                            std::to_string(in.rows));
  }
  if (o.use_fixed_scale && o.scheme != Scheme::kFP8Tensor)
    throw InvalidArgument(who + "a delayed-scaling state applies to fp8_tensor only");
  if (o.use_fixed_scale && !(o.fixed_scale > 0.0f && o.fixed_scale <= FLT_MAX))
    throw InvalidArgument(who + "delayed scale must be finite and positive, got " + std::to_string(o.fixed_scale));
  if (!(o.amax_epsilon >= 0.0f)) throw InvalidArgument(who + "amax_epsilon must be >= 0");
  for (const auto& [value, key] :
       {std::pair{o.group_amax, "group_amax"}, std::pair{o.group_rht_amax, "group_rht_amax"}}) {
    if (value < 0.0f) continue;  // (a NaN is not < 0: refused below)
    if (!(value <= FLT_MAX)) throw InvalidArgument(who + key + " must be finite, got " + std::to_string(value));
    if (!scheme_facts(o.scheme).tensor_factor || o.use_fixed_scale)
      throw InvalidArgument(who + key +
                            " sets a per-tensor factor: it applies to fp8_tensor (current scaling), "
                            "nvfp4 and nvfp4_2d, not to " +
                            scheme_name(o.scheme) + (o.use_fixed_scale ? " with a delayed scale" : ""));
  }
  if (std::isnan(o.group_amax) || std::isnan(o.group_rht_amax))
    throw InvalidArgument(who + "group_amax / group_rht_amax is NaN (a NaN amax is an error, not a scale)");
  if (o.group_rht_amax >= 0.0f && !(o.rht && o.columnwise))
    throw InvalidArgument(who + "group_rht_amax applies to an RHT'd columnwise copy (rht and columnwise set)");
  const SrIndexMap& m = o.sr_index;
  if (m.full_rows < 0 || m.full_cols < 0 || m.row_offset < 0 || m.col_offset < 0)
    throw InvalidArgument(who + "sr_index entries must be >= 0, got full (" + std::to_string(m.full_rows) + ", " +
                          std::to_string(m.full_cols) + ") at (" + std::to_string(m.row_offset) + ", " +
                          std::to_string(m.col_offset) + ")");
  // Columns cannot overrun the whole tensor's rows of bits (rows may: pad rows are dropped afterwards).
  if (m.full_cols != 0 && m.col_offset + in.cols > m.full_cols)
    throw InvalidArgument(who + "sr_index places " + std::to_string(in.cols) + " columns at column " +
                          std::to_string(m.col_offset) + " of a tensor with " + std::to_string(m.full_cols) +
                          " columns");
  if (m.full_rows != 0 && m.row_offset >= m.full_rows)
    throw InvalidArgument(who + "sr_index row offset " + std::to_string(m.row_offset) + " is outside the " +
                          std::to_string(m.full_rows) + " rows of the whole tensor");
  if (m.full_cols == 0 && m.col_offset != 0)
    throw InvalidArgument(who + "sr_index col_offset " + std::to_string(m.col_offset) +
                          " needs full_cols (the whole tensor's column count)");
  if (m.full_rows == 0 && m.row_offset != 0)
    throw InvalidArgument(who + "sr_index row_offset " + std::to_string(m.row_offset) +
                          " needs full_rows (the whole tensor's row count)");
}

CopyLayout copy_layout(const QuantizeOptions& o, int64_t rows, int64_t cols) {
  const SchemeFacts f = scheme_facts(o.scheme);
  CopyLayout L;
  L.rows = rows;
  L.cols = cols;
  L.data_row_bytes = o.element.bits() <= 4 ? ceil_div(cols, 2) : cols;  // FP4 (or narrower ExMy) packs 2/byte
  if (f.block_cols == 0) {
    L.scale_rows = L.scale_cols = 1;  // one scale for the tensor
  } else {
    L.scale_rows = ceil_div(rows, f.scale_row_div);
    L.scale_cols = ceil_div(cols, f.block_cols);
  }
  L.scale_storage = f.scale;
  L.has_mask = f.mask;
  return L;
}

QuantizeStats quantize(const QuantizeInput& in, const QuantizeOptions& o, const QuantizedCopy* rowwise,
                       const QuantizedCopy* columnwise) {
  validate_quantize(in, o);
  if ((o.rowwise && !rowwise) || (o.columnwise && !columnwise))
    throw InvalidArgument("quantize(" + in.name + "): missing output buffers for a requested copy");
  const cpu::TileInput tin{in.data, in.type, in.rows, in.cols};
  const int threads = num_threads();
  const bool bf16 = in.type == InputType::kBFloat16;
  const float value_for_inf = bf16 ? kBF16Max : FLT_MAX;
  const bool rht = o.rht && o.columnwise;

  // Scales that need the global amax before any element is encoded.
  const bool amax_first = (o.scheme == Scheme::kFP8Tensor && !o.use_fixed_scale) || o.scheme == Scheme::kNVFP4 ||
                          o.scheme == Scheme::kNVFP4_2D;
  cpu::AmaxResult a;
  float col_amax = 0.0f;
  if (rht) {  // (only nvfp4 takes RHT, and it is an amax_first scheme)
    const cpu::RhtAmaxResult r = cpu::rht_amax(tin, rht_sign_mask(o.rht_seed), bf16, threads);
    a = r.input;
    if (a.nan) report_nan(in);
    if (r.transformed.nan) report_transform_nan(in, "16-point RHT");
    col_amax = r.transformed.amax;
  } else if (amax_first) {
    a = cpu::input_amax(tin, threads);
    if (a.nan) report_nan(in);
    col_amax = a.amax;
  }
  // A group's amax replaces this input's own as the source of the per-tensor factors (validate_quantize allowed
  // it for amax_first schemes only).
  const CopyAmaxes factors = copy_amaxes(in, o, a.amax, col_amax);
  float row_amax = factors.rowwise;
  col_amax = factors.columnwise;

  // 2-D schemes: the columnwise copy is the rowwise one transposed, so the tiles always make rowwise codes
  // (into a target without buffers when the rowwise copy was not asked for).
  auto target = [&](const QuantizedCopy* out, bool columnwise, uint64_t offset, float copy_amax) {
    const int64_t rows = columnwise ? in.cols : in.rows, cols = columnwise ? in.rows : in.cols;
    cpu::CopyTarget t{copy_layout(o, rows, cols),
                      out ? *out : QuantizedCopy{},
                      offset,
                      sr_copy_indexing(o.sr_index, columnwise, in.rows, in.cols),
                      nvfp4_global_encode_scale(copy_amax),
                      BlockScale{}};
    t.tensor_scale = block_scale(o, copy_amax, value_for_inf, t.nvfp4_global_enc);
    return t;
  };
  const bool make_rowwise = o.rowwise || (o.columnwise && is_2d(o.scheme));
  cpu::CopyTarget row = target(o.rowwise ? rowwise : nullptr, false, o.offset, row_amax);
  cpu::CopyTarget col = target(o.columnwise ? columnwise : nullptr, true, o.offset + kColumnwiseSrOffset, col_amax);
  if (o.scheme == Scheme::kFP8Tensor) {
    for (const cpu::CopyTarget* t : {&row, &col})
      if (t->out.scale) static_cast<float*>(t->out.scale)[0] = t->tensor_scale.scale_inv;
  }
  for (const cpu::CopyTarget* t : {&row, &col}) {  // fresh buffers: fault them in as huge pages
    const CopyLayout& L = t->layout;
    cpu::advise_huge_pages(t->out.data, static_cast<size_t>(L.rows * L.data_row_bytes));
    cpu::advise_huge_pages(t->out.mask, static_cast<size_t>(L.rows * L.cols));
  }
  const cpu::PassResult pass = cpu::quantize_tiles(tin, o, value_for_inf, make_rowwise ? &row : nullptr,
                                                   o.columnwise ? &col : nullptr, !amax_first, threads);
  if (!amax_first && !rht) {
    a = pass.input;
    if (a.nan) report_nan(in);
    row_amax = col_amax = a.amax;
  }
  if (pass.transform_nan) report_transform_nan(in, o.scheme == Scheme::kMXFP4Quest ? "Hadamard-32" : "16-point RHT");
  if (o.rowwise) *rowwise->global_amax = row_amax;
  if (o.columnwise) *columnwise->global_amax = col_amax;
  return QuantizeStats{a.amax};
}

CopyAmaxes copy_amaxes(const QuantizeInput& in, const QuantizeOptions& o, float own, float own_columnwise) {
  // A group amax must cover this input, or its largest elements would overflow the format.
  auto check_covers = [&](float group, float own_amax, const char* key) {
    if (group < own_amax)
      throw InvalidArgument("quantize(" + in.name + "): " + key + " " + std::to_string(group) +
                            " is below this input's own amax " + std::to_string(own_amax) +
                            "; it must be the max over a group that includes this input");
  };
  const bool rht = o.rht && o.columnwise;
  CopyAmaxes r{own, own_columnwise};
  if (o.group_amax >= 0.0f) {
    check_covers(o.group_amax, own, "group_amax");
    r.rowwise = o.group_amax;
    if (!rht) r.columnwise = o.group_amax;
  }
  if (rht && o.group_rht_amax >= 0.0f) {
    check_covers(o.group_rht_amax, own_columnwise, "group_rht_amax");
    r.columnwise = o.group_rht_amax;
  }
  return r;
}

TensorAmax tensor_amax(const QuantizeInput& in, bool rht, uint64_t rht_seed) {
  if (in.rows < 0 || in.cols < 0) throw InvalidArgument("tensor_amax(" + in.name + "): negative shape");
  if (rht && in.rows % 16 != 0)
    throw InvalidArgument("tensor_amax(" + in.name +
                          "): the 16-point RHT runs along the first dimension, which "
                          "must be a multiple of 16; got " +
                          std::to_string(in.rows));
  const cpu::TileInput tin{in.data, in.type, in.rows, in.cols};
  TensorAmax out;
  if (rht) {
    const cpu::RhtAmaxResult r =
        cpu::rht_amax(tin, rht_sign_mask(rht_seed), in.type == InputType::kBFloat16, num_threads());
    out.amax = r.input.amax;
    out.rht_amax = r.transformed.amax;
    out.nan = r.input.nan || r.transformed.nan;
  } else {
    const cpu::AmaxResult a = cpu::input_amax(tin, num_threads());
    out.amax = out.rht_amax = a.amax;
    out.nan = a.nan;
  }
  return out;
}

void dequantize(const QuantizedCopy& q, const CopyLayout& L, const QuantizeOptions& o, float* out) {
  // CopyDecoder::value, (decode(code) · block scale) · tensor factor, with the decode from a table of every
  // code and the scale read once per block along the row: the same two FP32 products per element.
  const CopyDecoder decoder(q, L, o);
  const bool fp4 = o.element.bits() <= 4;
  float lut[256];
  for (uint32_t code = 0; code < (fp4 ? 16u : 256u); ++code) lut[code] = decode_scalar(code, o.element);
  const int64_t block = scheme_facts(o.scheme).block_cols > 0 ? scheme_facts(o.scheme).block_cols : L.cols;
  const float factor = decoder.tensor_factor();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < L.rows; ++r) {
    const uint8_t* codes = q.data + r * L.data_row_bytes;
    float* row = out + r * L.cols;
    for (int64_t c0 = 0; c0 < L.cols; c0 += block) {
      const float scale = decoder.block_scale(r, c0);
      const int64_t c1 = std::min(L.cols, c0 + block);
      if (fp4) {
        for (int64_t c = c0; c < c1; ++c) row[c] = lut[(codes[c / 2] >> ((c % 2) * 4)) & 0xFu] * scale * factor;
      } else {
        for (int64_t c = c0; c < c1; ++c) row[c] = lut[codes[c]] * scale * factor;
      }
    }
  }
}

Scheme parse_scheme(const std::string& name, Format* element) {
  struct Named {
    const char* name;
    Scheme scheme;
    Format element;
  };
  static const Named kSchemes[] = {
      {"fp8_tensor", Scheme::kFP8Tensor, formats::kE4M3},
      {"fp8_tensor_e5m2", Scheme::kFP8Tensor, formats::kE5M2},
      {"fp8_block128", Scheme::kFP8Block128, formats::kE4M3},
      {"fp8_block16", Scheme::kFP8Block16, formats::kE4M3},
      {"fp8_block128x128", Scheme::kFP8Block128x128, formats::kE4M3},
      {"mxfp8", Scheme::kMXFP8, formats::kE4M3},
      {"nvfp4", Scheme::kNVFP4, formats::kE2M1},
      {"nvfp4_2d", Scheme::kNVFP4_2D, formats::kE2M1},
      {"mxfp4", Scheme::kMXFP4, formats::kE2M1},
      {"mxfp4_quest", Scheme::kMXFP4Quest, formats::kE2M1},
  };
  for (const Named& s : kSchemes) {
    if (name == s.name) {
      if (element) *element = s.element;
      return s.scheme;
    }
  }
  throw InvalidArgument("unknown quantization scheme '" + name +
                        "'; valid: fp8_tensor, fp8_tensor_e5m2, fp8_block128, fp8_block128x128, fp8_block16, mxfp8, "
                        "nvfp4, nvfp4_2d, mxfp4, mxfp4_quest");
}

std::string scheme_name(Scheme scheme) {
  switch (scheme) {
    case Scheme::kFP8Tensor: return "fp8_tensor";
    case Scheme::kFP8Block128: return "fp8_block128";
    case Scheme::kFP8Block16: return "fp8_block16";
    case Scheme::kFP8Block128x128: return "fp8_block128x128";
    case Scheme::kMXFP8: return "mxfp8";
    case Scheme::kNVFP4: return "nvfp4";
    case Scheme::kNVFP4_2D: return "nvfp4_2d";
    case Scheme::kMXFP4: return "mxfp4";
    case Scheme::kMXFP4Quest: return "mxfp4_quest";
  }
  return "?";
}

QuantizeOptions default_options(Scheme scheme) {
  QuantizeOptions o;
  o.scheme = scheme;
  o.element = scheme_facts(scheme).element;
  o.pow2_scale = scheme_facts(scheme).pow2_scale;
  return o;
}

}  // namespace nibble::precision
