// CPU quantizers for every scheme of docs/QUANTIZATION.md. Structure: one pass finds amax (and NaN); each
// copy is then produced row by row from a float32 source matrix (the input, or its transpose for the
// columnwise copy, RHT-transformed when asked): per block a scale rule gives the element multiplier, the
// scaled row is rounded by encode_scalar (precision/format.h), and codes are packed.
#include <omp.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <string>
#include <vector>

#include "precision/block_scale.h"
#include "precision/error.h"
#include "precision/format_names.h"
#include "precision/hadamard.h"
#include "precision/quantize.h"
#include "precision/scaling.h"
#include "precision/stochastic.h"

namespace nibble::precision {
namespace {

constexpr uint64_t kColumnwiseOffset = uint64_t{1} << 63;  // columnwise copies draw independent SR bits
constexpr float kBF16Max = 3.3895313892515355e38f;         // 0x7F7F as bfloat16

struct BlockShape {
  int64_t rows;  // 0 = the whole tensor (per-tensor scaling)
  int64_t cols;
};

BlockShape block_shape(Scheme s) {
  switch (s) {
    case Scheme::kFP8Tensor: return {0, 0};
    case Scheme::kFP8Block128: return {1, 128};
    case Scheme::kFP8Block16: return {1, 16};
    case Scheme::kFP8Block128x128: return {128, 128};
    case Scheme::kMXFP8: return {1, 32};
    case Scheme::kNVFP4: return {1, 16};
    case Scheme::kNVFP4_2D: return {16, 16};
    case Scheme::kMXFP4: return {1, 32};
    case Scheme::kMXFP4Quest: return {1, 32};
  }
  return {1, 1};
}

bool is_fp4(Scheme s) {
  return s == Scheme::kNVFP4 || s == Scheme::kNVFP4_2D || s == Scheme::kMXFP4 || s == Scheme::kMXFP4Quest;
}
bool is_2d(Scheme s) { return s == Scheme::kFP8Block128x128 || s == Scheme::kNVFP4_2D; }

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A group holding both +Inf and -Inf transforms to NaN: an error, never a silent code.
[[noreturn]] void report_transform_nan(const QuantizeInput& in, const char* transform) {
  throw InvalidArgument("quantize(" + in.name + "): the " + transform +
                        " of a group holding both +Inf and -Inf is NaN; the input has infinities of both signs "
                        "within one 16/32-element group");
}

// ---- element rounding of one row ----------------------------------------------------------------------

// Rounds scaled[0, cols) of row `row` and packs the codes into out_row. SR bits belong to the flat index
// row * cols + c of this copy.
void encode_row(const float* scaled, int64_t row, int64_t cols, const Format& fmt, Rounding rounding,
                uint64_t seed, uint64_t offset, uint8_t* out_row, uint8_t* codes_tmp,
                std::vector<uint32_t>& words) {
  const int r = 8;
  const int per_word = elements_per_random_word(r);
  const uint64_t group = elements_per_philox_call(r);
  const uint64_t first = static_cast<uint64_t>(row) * cols;
  const uint64_t lead = first % group;
  if (rounding == Rounding::kStochastic) {
    const uint64_t calls = (lead + cols + group - 1) / group;
    words.resize(4 * calls);
    for (uint64_t c = 0; c < calls; ++c) {
      const Philox4x32Output o = philox_block(seed, offset, (first - lead) / group + c);
      for (int w = 0; w < 4; ++w) words[4 * c + w] = o.v[w];
    }
  }
  for (int64_t c = 0; c < cols; ++c) {
    RandomBits bits{0, r};
    if (rounding == Rounding::kStochastic) {
      const uint64_t e = lead + c;
      bits.value = (words[e / per_word] >> ((e % per_word) * r)) & 0xFFu;
    }
    codes_tmp[c] = static_cast<uint8_t>(encode_scalar(scaled[c], fmt, rounding, bits));
  }
  if (fmt.bits() <= 4) {
    for (int64_t c = 0; c + 1 < cols; c += 2) out_row[c / 2] = static_cast<uint8_t>(codes_tmp[c] | (codes_tmp[c + 1] << 4));
    if (cols % 2) out_row[cols / 2] = codes_tmp[cols - 1];
  } else {
    std::copy(codes_tmp, codes_tmp + cols, out_row);
  }
}

// ---- amax ------------------------------------------------------------------------------------------------

struct AmaxResult {
  float amax = 0.0f;
  bool nan = false;
};

AmaxResult amax_of(const float* x, int64_t n) {
  float amax = 0.0f;
  bool nan = false;
#pragma omp parallel for schedule(static) reduction(max : amax) reduction(|| : nan)
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    nan = nan || std::isnan(a);
    amax = a > amax ? a : amax;
  }
  return {amax, nan};
}

// ---- one copy -------------------------------------------------------------------------------------------

struct CopyJob {
  const float* src;  // rows x cols, row-major
  int64_t rows;
  int64_t cols;
  float amax;           // max|src|
  float value_for_inf;  // block FP8's fallback scale: the max of the input dtype
  uint64_t offset;      // SR counter offset of this copy
};

void store_scale(const CopyLayout& L, const QuantizedCopy& out, int64_t sr, int64_t sc, const BlockScale& b) {
  const int64_t i = sr * L.scale_cols + sc;
  if (L.scale_storage == ScaleStorage::kFloat32) {
    static_cast<float*>(out.scale)[i] = b.scale_inv;
  } else {
    static_cast<uint8_t*>(out.scale)[i] = static_cast<uint8_t>(b.code);
  }
}

// Per-tensor and 1-D block schemes (block rows = 1) and 2-D tiles, sharing one row loop.
void quantize_blocks(const QuantizeOptions& o, const CopyJob& job, const CopyLayout& L, const QuantizedCopy& out) {
  const BlockShape bs = block_shape(o.scheme);
  const int64_t rows = job.rows, cols = job.cols;
  const float nv_global_enc = nvfp4_global_encode_scale(job.amax);
  const int64_t bcols = bs.rows == 0 ? cols : bs.cols;

  // 2-D tiles: the tile amaxes first (a tile spans many rows).
  std::vector<BlockScale> tile_scales;
  if (bs.rows > 1) {
    const int64_t tr = ceil_div(rows, bs.rows), tc = ceil_div(cols, bs.cols);
    tile_scales.resize(static_cast<size_t>(tr * tc));
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < tr * tc; ++t) {
      const int64_t r0 = (t / tc) * bs.rows, c0 = (t % tc) * bs.cols;
      float a = 0.0f;
      for (int64_t r = r0; r < std::min(rows, r0 + bs.rows); ++r)
        for (int64_t c = c0; c < std::min(cols, c0 + bs.cols); ++c) a = std::max(a, std::fabs(job.src[r * cols + c]));
      tile_scales[static_cast<size_t>(t)] = block_scale(o, a, job.value_for_inf, nv_global_enc);
    }
    if (o.scheme == Scheme::kFP8Block128x128) {
      for (int64_t t = 0; t < tr * tc; ++t) store_scale(L, out, t / tc, t % tc, tile_scales[static_cast<size_t>(t)]);
    }
  }
  const BlockScale tensor_scale =
      bs.rows == 0 ? block_scale(o, job.amax, job.value_for_inf, nv_global_enc) : BlockScale{};
  if (bs.rows == 0) store_scale(L, out, 0, 0, tensor_scale);

#pragma omp parallel
  {
    std::vector<float> scaled(static_cast<size_t>(cols));
    std::vector<uint8_t> codes(static_cast<size_t>(cols));
    std::vector<uint32_t> words;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* x = job.src + r * cols;
      for (int64_t c0 = 0; c0 < cols; c0 += bcols) {
        const int64_t c1 = std::min(cols, c0 + bcols);
        BlockScale b;
        if (bs.rows == 0) {
          b = tensor_scale;
        } else if (bs.rows == 1) {
          float a = 0.0f;
          for (int64_t c = c0; c < c1; ++c) a = std::max(a, std::fabs(x[c]));
          b = block_scale(o, a, job.value_for_inf, nv_global_enc);
          store_scale(L, out, r, c0 / bcols, b);
        } else {
          b = tile_scales[static_cast<size_t>((r / bs.rows) * ceil_div(cols, bs.cols) + c0 / bs.cols)];
          if (o.scheme == Scheme::kNVFP4_2D) store_scale(L, out, r, c0 / bcols, b);  // replicated per row
        }
        for (int64_t c = c0; c < c1; ++c) scaled[c] = x[c] * b.multiplier;
      }
      encode_row(scaled.data(), r, cols, o.element, o.rounding, o.seed, job.offset, out.data + r * L.data_row_bytes,
                 codes.data(), words);
    }
  }
}

// MXFP4 QuEST: Hadamard-32 per group, sigma-based power-of-two scale, RNE/SR, clip mask.
// Returns false if a group's transform produced NaN (+Inf and -Inf in one group).
bool quantize_quest(const QuantizeOptions& o, const CopyJob& job, const CopyLayout& L, const QuantizedCopy& out) {
  const int64_t rows = job.rows, cols = job.cols;
  bool nan = false;
#pragma omp parallel reduction(|| : nan)
  {
    std::vector<float> scaled(static_cast<size_t>(cols));
    std::vector<uint8_t> codes(static_cast<size_t>(cols));
    std::vector<uint32_t> words;
    float h[32];
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* x = job.src + r * cols;
      for (int64_t g = 0; g < cols / 32; ++g) {
        hadamard32_normalised(x + 32 * g, h);
        double sum = 0.0, sum_sq = 0.0;
        for (int i = 0; i < 32; ++i) nan = nan || std::isnan(h[i]);
        for (int i = 0; i < 32; ++i) {
          sum += h[i];
          sum_sq += static_cast<double>(h[i]) * h[i];
        }
        const double mean = sum / 32.0;
        const double var = std::max(sum_sq / 32.0 - mean * mean, 0.0);
        const uint32_t e = quest_scale_code(std::sqrt(var));
        static_cast<uint8_t*>(out.scale)[r * L.scale_cols + g] = static_cast<uint8_t>(e);
        const float m = e8m0_encode_multiplier(e);
        for (int i = 0; i < 32; ++i) {
          const float v = h[i] * m;
          scaled[32 * g + i] = v;
          out.mask[r * cols + 32 * g + i] = std::fabs(v) <= 6.0f ? 1 : 0;
        }
      }
      encode_row(scaled.data(), r, cols, o.element, o.rounding, o.seed, job.offset, out.data + r * L.data_row_bytes,
                 codes.data(), words);
    }
  }
  return !nan;
}

void quantize_copy(const QuantizeInput& in, const QuantizeOptions& o, const CopyJob& job, const QuantizedCopy& out) {
  const CopyLayout L = copy_layout(o, job.rows, job.cols);
  *out.global_amax = job.amax;
  if (o.scheme == Scheme::kMXFP4Quest) {
    if (!quantize_quest(o, job, L, out)) report_transform_nan(in, "Hadamard-32");
  } else {
    quantize_blocks(o, job, L, out);
  }
}

// ---- transposes -----------------------------------------------------------------------------------------

std::vector<float> transpose(const float* x, int64_t rows, int64_t cols) {
  std::vector<float> t(static_cast<size_t>(rows * cols));
  constexpr int64_t kTile = 64;
#pragma omp parallel for schedule(static) collapse(2)
  for (int64_t r0 = 0; r0 < rows; r0 += kTile)
    for (int64_t c0 = 0; c0 < cols; c0 += kTile)
      for (int64_t r = r0; r < std::min(rows, r0 + kTile); ++r)
        for (int64_t c = c0; c < std::min(cols, c0 + kTile); ++c) t[c * rows + r] = x[r * cols + c];
  return t;
}

uint32_t code_at(const uint8_t* data, int64_t row_bytes, int64_t r, int64_t c, bool fp4) {
  if (!fp4) return data[r * row_bytes + c];
  return (data[r * row_bytes + c / 2] >> ((c % 2) * 4)) & 0xFu;
}

// Columnwise copy of a 2-D scheme: the rowwise copy transposed (codes, and the tile scales).
void transpose_copy(const QuantizeOptions& o, const QuantizedCopy& row, const CopyLayout& RL, const QuantizedCopy& col,
                    const CopyLayout& CL) {
  const bool fp4 = o.element.bits() <= 4;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < CL.rows; ++r) {
    uint8_t* out = col.data + r * CL.data_row_bytes;
    if (fp4) std::fill(out, out + CL.data_row_bytes, uint8_t{0});
    for (int64_t c = 0; c < CL.cols; ++c) {
      const uint32_t code = code_at(row.data, RL.data_row_bytes, c, r, fp4);
      if (fp4) {
        out[c / 2] = static_cast<uint8_t>(out[c / 2] | (code << ((c % 2) * 4)));
      } else {
        out[c] = static_cast<uint8_t>(code);
      }
    }
  }
  if (o.scheme == Scheme::kFP8Block128x128) {
    const auto* s = static_cast<const float*>(row.scale);
    auto* d = static_cast<float*>(col.scale);
    for (int64_t i = 0; i < CL.scale_rows; ++i)
      for (int64_t j = 0; j < CL.scale_cols; ++j) d[i * CL.scale_cols + j] = s[j * RL.scale_cols + i];
  } else {  // NVFP4 2-D: the tile scale of (r, c) is the rowwise one of (c, r), replicated per row
    const auto* s = static_cast<const uint8_t*>(row.scale);
    auto* d = static_cast<uint8_t*>(col.scale);
    for (int64_t i = 0; i < CL.scale_rows; ++i)
      for (int64_t j = 0; j < CL.scale_cols; ++j) d[i * CL.scale_cols + j] = s[(j * 16) * RL.scale_cols + i / 16];
  }
  *col.global_amax = *row.global_amax;
}

// IEEE round-to-nearest-even to BF16 (Inf stays Inf, overflow becomes Inf): what TE's tensor-core RHT
// output does, unlike nibble's satfinite element casts.
float round_to_bf16_ieee(float v) {
  const uint32_t u = float_bits(v);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return v;  // NaN
  return bits_float(((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16) << 16);
}

void apply_rht_rows(std::vector<float>& t, int64_t rows, int64_t cols, uint64_t rht_seed, bool round_to_bf16) {
  const uint32_t mask = rht_sign_mask(rht_seed);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    float y[16];
    for (int64_t g = 0; g < cols / 16; ++g) {
      float* p = t.data() + r * cols + 16 * g;
      rht16(p, mask, y);
      for (int i = 0; i < 16; ++i) p[i] = round_to_bf16 ? round_to_bf16_ieee(y[i]) : y[i];
    }
  }
}

[[noreturn]] void report_nan(const QuantizeInput& in, const float* x) {
  for (int64_t i = 0; i < in.rows * in.cols; ++i)
    if (std::isnan(x[i]))
      throw InvalidArgument("quantize(" + in.name + "): input has NaN at (" + std::to_string(i / in.cols) + ", " +
                            std::to_string(i % in.cols) + ") of shape (" + std::to_string(in.rows) + ", " +
                            std::to_string(in.cols) + ")");
  throw InvalidArgument("quantize(" + in.name + "): input has NaN");
}

void validate(const QuantizeInput& in, const QuantizeOptions& o) {
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
}

}  // namespace

CopyLayout copy_layout(const QuantizeOptions& o, int64_t rows, int64_t cols) {
  const BlockShape bs = block_shape(o.scheme);
  CopyLayout L;
  L.rows = rows;
  L.cols = cols;
  L.data_row_bytes = o.element.bits() <= 4 ? ceil_div(cols, 2) : cols;  // FP4 (or narrower ExMy) packs 2/byte
  switch (o.scheme) {
    case Scheme::kFP8Tensor: L.scale_rows = 1, L.scale_cols = 1; break;
    case Scheme::kFP8Block128x128: L.scale_rows = ceil_div(rows, 128), L.scale_cols = ceil_div(cols, 128); break;
    default: L.scale_rows = rows, L.scale_cols = ceil_div(cols, bs.cols); break;
  }
  if (o.scheme == Scheme::kMXFP8 || o.scheme == Scheme::kMXFP4 || o.scheme == Scheme::kMXFP4Quest)
    L.scale_storage = ScaleStorage::kE8M0;
  else if (o.scheme == Scheme::kNVFP4 || o.scheme == Scheme::kNVFP4_2D)
    L.scale_storage = ScaleStorage::kUE4M3;
  L.has_mask = o.scheme == Scheme::kMXFP4Quest;
  return L;
}

QuantizeStats quantize(const QuantizeInput& in, const QuantizeOptions& o, const QuantizedCopy* rowwise,
                       const QuantizedCopy* columnwise) {
  validate(in, o);
  if ((o.rowwise && !rowwise) || (o.columnwise && !columnwise))
    throw InvalidArgument("quantize(" + in.name + "): missing output buffers for a requested copy");
  const int64_t n = in.rows * in.cols;
  std::vector<float> widened;
  const float* x = static_cast<const float*>(in.data);
  if (in.type == InputType::kBFloat16) {
    widened.resize(static_cast<size_t>(n));
    const auto* b = static_cast<const uint16_t*>(in.data);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) widened[i] = bits_float(static_cast<uint32_t>(b[i]) << 16);
    x = widened.data();
  }
  const AmaxResult a = amax_of(x, n);
  if (a.nan) report_nan(in, x);
  const float value_for_inf = in.type == InputType::kBFloat16 ? kBF16Max : FLT_MAX;

  // 2-D schemes: the columnwise copy is the rowwise one transposed, so it needs the rowwise codes.
  const CopyLayout RL = copy_layout(o, in.rows, in.cols);
  const bool need_rowwise = o.rowwise || (o.columnwise && is_2d(o.scheme));
  std::vector<uint8_t> tmp_data, tmp_scale;
  float tmp_amax = 0.0f;
  QuantizedCopy row_out = o.rowwise ? *rowwise : QuantizedCopy{};
  if (need_rowwise && !o.rowwise) {
    tmp_data.resize(static_cast<size_t>(RL.rows * RL.data_row_bytes));
    tmp_scale.resize(static_cast<size_t>(RL.scale_rows * RL.scale_cols * 4));
    row_out = QuantizedCopy{tmp_data.data(), tmp_scale.data(), &tmp_amax, nullptr};
  }
  if (need_rowwise) quantize_copy(in, o, CopyJob{x, in.rows, in.cols, a.amax, value_for_inf, o.offset}, row_out);

  if (o.columnwise) {
    const CopyLayout CL = copy_layout(o, in.cols, in.rows);
    if (is_2d(o.scheme)) {
      transpose_copy(o, row_out, RL, *columnwise, CL);
    } else {
      std::vector<float> t = transpose(x, in.rows, in.cols);
      float col_amax = a.amax;
      if (o.rht) {
        apply_rht_rows(t, in.cols, in.rows, o.rht_seed, in.type == InputType::kBFloat16);
        const AmaxResult ta = amax_of(t.data(), n);
        if (ta.nan) report_transform_nan(in, "16-point RHT");
        col_amax = ta.amax;
      }
      quantize_copy(in, o, CopyJob{t.data(), in.cols, in.rows, col_amax, value_for_inf, o.offset + kColumnwiseOffset},
                    *columnwise);
    }
  }
  return QuantizeStats{a.amax};
}

void dequantize(const QuantizedCopy& q, const CopyLayout& L, const QuantizeOptions& o, float* out) {
  const BlockShape bs = block_shape(o.scheme);
  const bool fp4 = o.element.bits() <= 4;
  const float nv_dec = 1.0f / nvfp4_global_encode_scale(*q.global_amax);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < L.rows; ++r) {
    for (int64_t c = 0; c < L.cols; ++c) {
      const float v = decode_scalar(code_at(q.data, L.data_row_bytes, r, c, fp4), o.element);
      float result;
      switch (o.scheme) {
        case Scheme::kFP8Tensor: result = v * static_cast<const float*>(q.scale)[0]; break;
        case Scheme::kFP8Block128:
        case Scheme::kFP8Block16:
          result = v * static_cast<const float*>(q.scale)[r * L.scale_cols + c / bs.cols];
          break;
        case Scheme::kFP8Block128x128:
          result = v * static_cast<const float*>(q.scale)[(r / 128) * L.scale_cols + c / 128];
          break;
        case Scheme::kNVFP4:
        case Scheme::kNVFP4_2D: {
          const uint32_t s = static_cast<const uint8_t*>(q.scale)[r * L.scale_cols + c / 16];
          result = v * decode_scalar(s, formats::kE4M3) * nv_dec;
          break;
        }
        default:  // E8M0-scaled schemes
          result = v * e8m0_decode_multiplier(static_cast<const uint8_t*>(q.scale)[r * L.scale_cols + c / bs.cols]);
          break;
      }
      out[r * L.cols + c] = result;
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
  o.element = is_fp4(scheme) ? formats::kE2M1 : formats::kE4M3;
  o.pow2_scale = scheme == Scheme::kFP8Block128 || scheme == Scheme::kFP8Block128x128;
  return o;
}

}  // namespace nibble::precision
