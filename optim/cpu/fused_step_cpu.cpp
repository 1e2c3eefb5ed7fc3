// The fused CPU optimizer step. The numerics are the shared scalar rules (optim/dre.h, dynamic_map.h,
// update_rules.h, precision/format.h); this file arranges them so one tile of 256 elements is decoded,
// updated, re-encoded and written while it sits in L1 (buffers that already hold FP32 -- fp32 states, the
// master, an fp32 parameter -- are updated in place), and splits the tensors into fixed chunks for the
// OpenMP threads. The step is bound by memory bandwidth only if every per-element loop is vector code, so:
//  - each inner loop has loop-invariant choices only, works on restrict-qualified tile arrays and takes its
//    per-tensor constants by value (a reference into the caller's vector would be reloaded per element,
//    since the compiler cannot prove the tile stores do not alias it);
//  - reductions (group max / min) run on the bits of |x|, where integer order is value order and the
//    integer max / min vectorise (float ones do not without -ffinite-math-only);
//  - stochastic rounding's Philox bits come 32 counters at a time from precision's random_span_bits, drawn
//    once per 2048-element span rather than one scalar Philox call per 8 elements;
//  - E4M3 codes decode through an FP16 conversion (Highway lanes on every CPU, e4m3_decode_hwy.h) and are
//    written by precision's encode_rne_lanes, bfloat16 codes by bf16_lanes.h; int8 codes decode by byte-plane
//    permutes (AVX-512 VBMI) or gathers (Highway elsewhere) and encode through a bucket table (one gather per
//    vector instead of an 8-step dependent search), both in dynamic_map_lanes.h; all checked equal to the
//    scalar rules (tests/optim/test_state_lanes.cpp, test_fused_step.cpp).
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cstdlib>
#include <string>
#include <vector>

#include "optim/cpu/bf16_lanes.h"
#include "optim/cpu/dynamic_map_lanes.h"
#include "optim/cpu/e4m3_decode_hwy.h"
#include "optim/dre.h"
#include "optim/dynamic_map.h"
#include "optim/fused_step.h"
#include "precision/convert.h"
#include "precision/cpu/encode_rne_lanes.h"
#include "precision/cpu/encode_span.h"
#include "precision/e4m3_values.h"
#include "precision/error.h"

namespace nibble::optim {
namespace {

using precision::encode_scalar;
using precision::Rounding;
namespace formats = precision::formats;

constexpr int64_t kChunk = 4096;  // work item: a multiple of 128 (fp8), 256 (int8) and of kRandomSpan
// Work items a thread takes at once: 64K elements, contiguous, so each thread streams through memory long enough
// for the hardware prefetchers (one item at a time, the two threads' items interleaved and every stream restarted
// each 16 KiB: the fp32 step reached ~60% of the bandwidth torch's kernel reaches on Zen 4). threads_for gives a
// thread per 64K elements, the same grain. (Results never depend on how items are shared out.)
constexpr int kItemsPerGrab = 16;
constexpr int kTile = 256;        // elements decoded/updated/encoded together
constexpr int64_t kPrefetchAhead = 4 * kTile;  // software prefetch distance of the gradient and FP32 values
constexpr int kSrBits = 16;       // random bits for BF16 stochastic rounding (precision's default for 16-bit)
constexpr int64_t kRandomSpan = static_cast<int64_t>(precision::kMaxRandomSpan);  // elements per Philox draw
static_assert(kChunk % kRandomSpan == 0 && kRandomSpan % kTile == 0, "spans split chunks on tile boundaries");

float bf16_to_float(uint16_t b) {
  return std::bit_cast<float>(static_cast<uint32_t>(b) << 16);
}

// ---- Exact division by a constant ----------------------------------------------------------------------------
// Division by a per-tensor or per-group constant as a multiply in double. The AdamW loop and DRE's transcendental
// loops are bound by the divider (a division costs ~10 cycles per vector); several of their divisions have a
// divisor that is constant over the loop.
//
// Why it gives the float quotient's bits: for floats a, b with a / b zero, non-finite or of magnitude >= 2^-126,
// RN_float(a / b) = RN_float(RN_double(a * RN_double(1 / b))). The double product is within 2^-52 (relative) of
// a / b. A float midpoint in the normal range (or at the overflow threshold) is an odd 25-bit integer times a
// power of two, so a / b (24-bit significands) is never one and differs from it by at least 2^-49 (relative):
// the product rounds to the float a / b rounds to. Zeros, infinities and NaNs pass through IEEE double
// arithmetic as through the float division, and float operands cannot over- or underflow a double.
// (For subnormal quotients the argument fails: a / b can be exactly a subnormal midpoint.)
struct ConstantDivisor {
  double reciprocal;
  explicit ConstantDivisor(float divisor) : reciprocal(1.0 / static_cast<double>(divisor)) {}
  float divide(float a) const { return static_cast<float>(static_cast<double>(a) * reciprocal); }
};

// The plain float division, for the DRE loops where it is the faster of the two (same bits, by definition).
struct FloatDivisor {
  float divisor;
  explicit FloatDivisor(float d) : divisor(d) {}
  float divide(float a) const { return a / divisor; }
};

// Which one DRE's loops use. On Intel cores (Emerald Rapids) the divider bounds those loops and the double
// reciprocal wins; on AMD Zen 4 (5 divisions per parameter go through a divider that keeps up) the loops are
// bound by the FMA pipes, and the reciprocal's conversions cost more than the divisions: plain division is ~12%
// faster for fp8 states there. The AdamW loop keeps the reciprocal on both (no difference on Zen 4).
// Other architectures (ARM) take the reciprocal. NIBBLE_DRE_RECIPROCAL=1 / 0 forces one (the tests run both
// paths on any CPU).
bool dre_divides_by_reciprocal() {
  static const bool by_reciprocal = [] {
    if (const char* forced = std::getenv("NIBBLE_DRE_RECIPROCAL")) return std::string(forced) == "1";
#if defined(__x86_64__) || defined(__i386__)
    return !__builtin_cpu_is("amd");
#else
    return true;  // (__builtin_cpu_is is x86's) not measured elsewhere: the reciprocal, as on non-AMD x86
#endif
  }();
  return by_reciprocal;
}

// ---- Stochastic-rounding bits --------------------------------------------------------------------------

// The 16-bit SR draws of one stream over one span: bits[j] = precision::stochastic_bits(seed, offset,
// first + j, 16). (The scratch is large: one per stream, reused span after span.)
struct SpanRandom {
  precision::SpanRandomScratch scratch;
  const uint16_t* bits = nullptr;
  void draw(uint64_t seed, uint64_t offset, uint64_t first, int64_t n) {
    bits = precision::random_span_bits(seed, offset, first, static_cast<size_t>(n), kSrBits, scratch);
  }
};

// ---- Group reductions on the bits of |x| ----------------------------------------------------------------
// |x|'s bits are below 2^31, so they order the same as signed int32: GCC 12 vectorises signed integer
// max / min reductions, not unsigned ones.

int32_t abs_bits(float x) {
  return std::bit_cast<int32_t>(x) & 0x7FFFFFFF;
}

// max |x| over x[0, n), NaN ignored: std::max(max, fabsf(x)) never takes a NaN, and neither does this.
float max_abs_ignoring_nan(const float* __restrict x, int n) {
  int32_t max_bits = 0;
  for (int j = 0; j < n; ++j) {
    const int32_t a = abs_bits(x[j]);
    max_bits = std::max(max_bits, a <= 0x7F800000 ? a : 0);
  }
  return std::bit_cast<float>(max_bits);
}

// DRE's group extremes: the max of |x| (NaN bits included, as an integer max takes them) and the min of the
// nonzero |x| (FLT_MAX when there is none).
struct GroupExtremes {
  float max_abs, min_nonzero_abs;
};
GroupExtremes group_extremes(const float* __restrict x, int n) {
  // The min runs over |x| - 1 with 0 wrapped to 0x7FFFFFFF (above every nonzero |x| - 1): a plain min
  // reduction GCC vectorises, where a select of a sentinel for zeros is not.
  int32_t max_bits = 0, min_minus_one = 0x7FFFFFFF;
  for (int j = 0; j < n; ++j) {
    const int32_t a = abs_bits(x[j]);
    max_bits = std::max(max_bits, a);
    min_minus_one = std::min(min_minus_one, (a - 1) & 0x7FFFFFFF);
  }
  const int32_t flt_max_bits = std::bit_cast<int32_t>(FLT_MAX);
  const int32_t min_bits = min_minus_one == 0x7FFFFFFF ? flt_max_bits : std::min(min_minus_one + 1, flt_max_bits);
  return {std::bit_cast<float>(max_bits), std::bit_cast<float>(min_bits)};
}

// ---- E4M3 codes ------------------------------------------------------------------------------------------

// codes[j] = encode_scalar(y[j], E4M3, RNE): precision's 16-lane encoder where there is one (exhaustively
// checked against encode_scalar in precision's tests), the scalar rule otherwise.
void encode_e4m3(const float* __restrict y, int n, uint8_t* __restrict codes) {
#if NIBBLE_HAVE_RNE_LANES
  precision::encode_rne_lanes<formats::kE4M3>(y, static_cast<size_t>(n), 1.0f, codes);
#else
  for (int j = 0; j < n; ++j) codes[j] = static_cast<uint8_t>(encode_scalar(y[j], formats::kE4M3, Rounding::kNearestEven));
#endif
}

// out[j] = decode_scalar(codes[j], E4M3): Highway lanes on every CPU (e4m3_decode_hwy.h; its AVX-512 target
// is as fast as the AVX-512 intrinsics it replaced, 8-9 G codes/s on Zen 4), the table without Highway.
void decode_e4m3(const uint8_t* __restrict codes, int n, float* __restrict out) {
#if NIBBLE_HAVE_E4M3_DECODE_HWY
  decode_e4m3_hwy(codes, static_cast<size_t>(n), out);
#else
  const float* table = precision::e4m3_values().data();
  for (int j = 0; j < n; ++j) out[j] = table[codes[j]];
#endif
}

// ---- Moments: decode a tile into FP32, encode it back ---------------------------------------------------

// dre_decode (dre.h) over y[0, len) in place, with its division by the group's k done by Divisor (FloatDivisor:
// the rule itself; ConstantDivisor: |log2_portable(|t|)| is 0 or at least 2^-24, so for k <= 2^100 the quotient
// is 0 or normal and the bits are dre_decode's). (Loops of one step each: GCC does not vectorise the double
// multiply inside the whole rule.)
template <class Divisor>
void dre_decode_by(float* __restrict y, int len, const Divisor expansion, float centre, float scale) {
  alignas(64) float l[kDreGroupSize];
  for (int j = 0; j < len; ++j) l[j] = log2_portable(fabsf(y[j] * scale));
  for (int j = 0; j < len; ++j) l[j] = expansion.divide(l[j]);
  for (int j = 0; j < len; ++j) {
    const float t = y[j] * scale;
    const float a = exp2_portable(l[j]) * centre;
    y[j] = t == 0.0f ? 0.0f : (t < 0.0f ? -a : a);
  }
}

// dre_expand (dre.h) of x[0, len) into y, with its divisions by the group's centre and scale done by Divisor
// (FloatDivisor: the rule itself). For ConstantDivisor the caller checks that the group's smallest nonzero |x| over the centre is above FLT_MIN, so
// a / centre is normal for every nonzero a (zeros are selected out) and exact. The quotient by the scale feeds
// only the E4M3 cast, which rounds everything below 2^-10 to a zero code: where that quotient is subnormal (and
// might differ in its last bits) the code is zero either way, and where it is normal it is exact. So the codes
// are dre_encode's.
template <class Divisor>
void dre_expand_by(const float* __restrict x, int len, float expansion, const Divisor centre, const Divisor scale,
                   float* __restrict y) {
  for (int j = 0; j < len; ++j) y[j] = centre.divide(fabsf(x[j]));
  for (int j = 0; j < len; ++j) y[j] = exp2_portable(expansion * log2_portable(y[j]));
  for (int j = 0; j < len; ++j) y[j] = scale.divide(y[j]);
  for (int j = 0; j < len; ++j) y[j] = x[j] == 0.0f ? 0.0f : (x[j] < 0.0f ? -y[j] : y[j]);
}

void decode_fp8_dre(const MomentView& mv, int64_t begin, int n, float* __restrict out) {
  const uint8_t* codes = static_cast<const uint8_t*>(mv.values) + begin;
  for (int g0 = 0; g0 < n; g0 += kDreGroupSize) {
    const int64_t grp_index = (begin + g0) / kDreGroupSize;
    const float scale = mv.scale[grp_index], k = mv.expansion[grp_index], centre = mv.centre[grp_index];
    const int len = std::min(n - g0, kDreGroupSize);
    float* __restrict y = out + g0;
    // Two loops: the E4M3 values, then the DRE decode (two transcendentals per element) over them.
    decode_e4m3(codes + g0, len, y);
    if (!dre_divides_by_reciprocal()) {
      dre_decode_by(y, len, FloatDivisor(k), centre, scale);
    } else if (k >= 0x1p-100f && k <= 0x1p100f) {
      dre_decode_by(y, len, ConstantDivisor(k), centre, scale);
    } else {  // (never written by the encoder: k is in [0, 1024]; a state from elsewhere keeps its exact rule)
      for (int j = 0; j < len; ++j) y[j] = dre_decode(y[j], k, centre, scale);
    }
  }
}

void decode_fp8_plain(const MomentView& mv, int64_t begin, int n, float* __restrict out) {
  const uint8_t* codes = static_cast<const uint8_t*>(mv.values) + begin;
  for (int g0 = 0; g0 < n; g0 += kDreGroupSize) {
    const float scale = mv.scale[(begin + g0) / kDreGroupSize];
    const int len = std::min(n - g0, kDreGroupSize);
    float* __restrict y = out + g0;
    decode_e4m3(codes + g0, len, y);
    for (int j = 0; j < len; ++j) y[j] = plain_fp8_decode(y[j], scale);
  }
}

// A tile is exactly one 256-element block (chunks and tiles start at multiples of 256).
void decode_int8(const MomentView& mv, bool is_signed, int64_t begin, int n, float* __restrict out) {
  dynamic_map_decode_span(static_cast<const uint8_t*>(mv.values) + begin, n, mv.scale[begin / kInt8BlockSize],
                          is_signed, out);
}

// The FP32 values of a moment's tile: fp32 states in place, the others decoded into `tile`.
float* moment_values(StateCodec codec, const MomentView& mv, bool is_signed, int64_t begin, int n,
                     float* __restrict tile) {
  switch (codec) {
    case StateCodec::kFP32:
      return static_cast<float*>(mv.values) + begin;
    case StateCodec::kBF16: {
      const uint16_t* src = static_cast<const uint16_t*>(mv.values) + begin;
      for (int j = 0; j < n; ++j) tile[j] = bf16_to_float(src[j]);
      break;
    }
    case StateCodec::kFP8:
      decode_fp8_dre(mv, begin, n, tile);
      break;
    case StateCodec::kFP8Plain:
      decode_fp8_plain(mv, begin, n, tile);
      break;
    case StateCodec::kInt8:
      decode_int8(mv, is_signed, begin, n, tile);
      break;
  }
  return tile;
}

void encode_fp8_dre(const MomentView& mv, int64_t begin, int n, const float* __restrict x, bool clamp_k) {
  alignas(64) float y_tile[kTile];  // the expanded values of every group, then one E4M3 pass (as fp8_plain)
  for (int g0 = 0; g0 < n; g0 += kDreGroupSize) {
    const int len = std::min(n - g0, kDreGroupSize);
    const float* __restrict xg = x + g0;
    const GroupExtremes ext = group_extremes(xg, len);
    const DreGroup grp = dre_group(ext.max_abs, ext.min_nonzero_abs, clamp_k);
    const int64_t grp_index = (begin + g0) / kDreGroupSize;
    mv.scale[grp_index] = grp.scale;
    mv.expansion[grp_index] = grp.expansion;
    mv.centre[grp_index] = grp.centre;
    // dre_encode in two loops (expand, then cast), each of which is vector code on its own.
    float* __restrict y = y_tile + g0;
    const float k = grp.expansion, centre = grp.centre, scale = grp.scale;
    if (!dre_divides_by_reciprocal()) {
      dre_expand_by(xg, len, k, FloatDivisor(centre), FloatDivisor(scale), y);
    } else if (ext.min_nonzero_abs / centre > FLT_MIN) {
      dre_expand_by(xg, len, k, ConstantDivisor(centre), ConstantDivisor(scale), y);
    } else {  // a group spanning nearly FP32's whole range: a / centre may be subnormal
      for (int j = 0; j < len; ++j) y[j] = dre_expand(xg[j], k, centre, scale);
    }
  }
  encode_e4m3(y_tile, n, static_cast<uint8_t*>(mv.values) + begin);
}

void encode_fp8_plain(const MomentView& mv, int64_t begin, int n, const float* __restrict x) {
  // The scaled values of the whole tile, then one E4M3 pass over them (one dispatched call per tile, not per
  // group: its set-up cost as much as a 128-element group's encoding).
  alignas(64) float y[kTile];
  for (int g0 = 0; g0 < n; g0 += kDreGroupSize) {
    const int len = std::min(n - g0, kDreGroupSize);
    const float scale = plain_fp8_scale(max_abs_ignoring_nan(x + g0, len));
    mv.scale[(begin + g0) / kDreGroupSize] = scale;
    for (int j = 0; j < len; ++j) y[g0 + j] = x[g0 + j] / scale;  // plain_fp8_encode's division
  }
  encode_e4m3(y, n, static_cast<uint8_t*>(mv.values) + begin);
}

void encode_int8(const MomentView& mv, bool is_signed, int64_t begin, int n, const float* __restrict x) {
  const float max_abs = max_abs_ignoring_nan(x, n);
  const float norm = max_abs > 0.0f ? max_abs : 1.0f;  // an all-zero block encodes 0 / 1 = 0
  mv.scale[begin / kInt8BlockSize] = max_abs;
  dynamic_map_encode_span(x, n, norm, is_signed, static_cast<uint8_t*>(mv.values) + begin);
}

struct EncodeContext {
  const uint16_t* random = nullptr;  // bf16: this tile's 16-bit SR draws of this moment's stream
  bool clamp_k = false;
};

// Encodes a moment's updated tile x (fp32 states were updated in place by moment_values' pointer).
void write_moment(StateCodec codec, const MomentView& mv, bool is_signed, int64_t begin, int n,
                  const float* __restrict x, const EncodeContext& ctx) {
  switch (codec) {
    case StateCodec::kFP32: {
      float* dst = static_cast<float*>(mv.values) + begin;
      if (dst != x)
        for (int j = 0; j < n; ++j) dst[j] = x[j];
      break;
    }
    case StateCodec::kBF16:
      // Stochastic rounding: beta2 = 0.999 changes v by less than half a BF16 ulp per step, which RNE
      // would drop every time.
      encode_bf16_stochastic(x, n, ctx.random, static_cast<uint16_t*>(mv.values) + begin);
      break;
    case StateCodec::kFP8:
      encode_fp8_dre(mv, begin, n, x, ctx.clamp_k);
      break;
    case StateCodec::kFP8Plain:
      encode_fp8_plain(mv, begin, n, x);
      break;
    case StateCodec::kInt8:
      encode_int8(mv, is_signed, begin, n, x);
      break;
  }
}

// ---- Parameters and gradients ------------------------------------------------------------------------------

void load_gradient(const TensorSlot& s, int64_t begin, int n, float scale, float* __restrict g) {
  if (s.grad_type == ElementType::kFloat32) {
    const float* src = static_cast<const float*>(s.grad) + begin;
    for (int j = 0; j < n; ++j) g[j] = src[j] * scale;
  } else {
    const uint16_t* src = static_cast<const uint16_t*>(s.grad) + begin;
    for (int j = 0; j < n; ++j) g[j] = bf16_to_float(src[j]) * scale;
  }
}

// The FP32 values a tile's update runs on: the master, or an fp32 parameter, in place; a master-less bfloat16
// parameter decoded into `tile`. (Updating in place spares a copy in and out of L1 per buffer.)
float* param_values(const TensorSlot& s, int64_t begin, int n, float* __restrict tile) {
  if (s.master) return s.master + begin;
  if (s.param_type == ElementType::kFloat32) return static_cast<float*>(s.param) + begin;
  const uint16_t* src = static_cast<const uint16_t*>(s.param) + begin;
  for (int j = 0; j < n; ++j) tile[j] = bf16_to_float(src[j]);
  return tile;
}

// Writes what param_values did not update in place: the model copy of a master (fp32, or bfloat16 by RNE), or a
// master-less bfloat16 parameter (stochastic rounding with this tile's `random` draws, else the RNE ablation).
void write_param(const TensorSlot& s, int64_t begin, int n, const float* __restrict p, const uint16_t* random) {
  if (s.param_type == ElementType::kFloat32) {
    if (!s.master) return;
    float* dst = static_cast<float*>(s.param) + begin;
    for (int j = 0; j < n; ++j) dst[j] = p[j];
    return;
  }
  uint16_t* dst = static_cast<uint16_t*>(s.param) + begin;
  if (random) {
    encode_bf16_stochastic(p, n, random, dst);
  } else {
    encode_bf16_nearest(p, n, dst);
  }
}

bool param_uses_sr(const TensorSlot& s, bool stochastic) {
  return s.param_type == ElementType::kBFloat16 && !s.master && stochastic;
}

// ---- Update rules over a tile ------------------------------------------------------------------------------

// adamw_element (update_rules.h) with its division by bias_correction2_sqrt done by ConstantDivisor: sqrt(v) is 0
// or at least 2^-75 and the divisor at most 1, so the quotient is 0 or normal and the bits are adamw_element's
// (the per-element reference test in tests/optim checks them). Scalars by value: a local copy the compiler keeps
// in registers across the vector loop.
void adamw_tile(float* __restrict p, float* __restrict m, float* __restrict v, const float* __restrict g, int n,
                const AdamWScalars sc) {
  const ConstantDivisor bias_correction2(sc.bias_correction2_sqrt);
  for (int j = 0; j < n; ++j) {
    const float gj = g[j];
    const float pj = p[j] * sc.decay;
    // torch's lerp: m + w (g - m) for w < 0.5, else g - (g - m)(1 - w)
    const float mj = sc.one_minus_beta1 < 0.5f ? m[j] + sc.one_minus_beta1 * (gj - m[j]) : gj - (gj - m[j]) * sc.beta1;
    const float vj = v[j] * sc.beta2 + sc.one_minus_beta2 * gj * gj;
    const float denom = bias_correction2.divide(sqrtf(vj)) + sc.eps;
    p[j] = pj + (-sc.step_size) * mj / denom;
    m[j] = mj;
    v[j] = vj;
  }
}

void sgd_tile(float* __restrict p, float* __restrict buf, const float* __restrict g, int n, const SgdScalars sc) {
  for (int j = 0; j < n; ++j) sgd_element(p[j], buf[j], g[j], sc);
}

// ---- Validation and work split -------------------------------------------------------------------------------

std::string slot_name(size_t i) {
  return "optimizer step: tensor " + std::to_string(i);
}

void validate_moment(size_t i, const char* which, const MomentView& mv, const MomentLayout& L) {
  auto missing = [&](const char* what) {
    throw InvalidArgument(slot_name(i) + ": moment " + which + " (codec " + state_codec_name(L.codec) + ") has no " +
                          what + " buffer");
  };
  if (!mv.values) missing("values");
  if (L.has_scale && !mv.scale) missing("scale");
  if (L.has_expansion && !mv.expansion) missing("k (expansion)");
  if (L.has_centre && !mv.centre) missing("centre");
}

void validate(std::span<const TensorSlot> slots, bool needs_v, bool needs_m) {
  for (size_t i = 0; i < slots.size(); ++i) {
    const TensorSlot& s = slots[i];
    if (s.numel < 0) throw InvalidArgument(slot_name(i) + ": numel must be >= 0, got " + std::to_string(s.numel));
    if (!s.param || !s.grad || !s.step)
      throw InvalidArgument(slot_name(i) + ": param, grad and step pointers are required (one is null)");
    if (*s.step < 0)
      throw InvalidArgument(slot_name(i) + ": step counter is negative (" + std::to_string(*s.step) + ")");
    const MomentLayout L = moment_layout(s.codec, s.numel);
    if (needs_m) validate_moment(i, "m", s.m, L);
    if (needs_v) validate_moment(i, "v", s.v, L);
  }
}

struct WorkItem {
  size_t slot;
  int64_t begin, end;
};

std::vector<WorkItem> split(std::span<const TensorSlot> slots) {
  std::vector<WorkItem> items;
  for (size_t i = 0; i < slots.size(); ++i)
    for (int64_t b = 0; b < slots[i].numel; b += kChunk) items.push_back({i, b, std::min(slots[i].numel, b + kChunk)});
  return items;
}

// A thread per 64K elements at most: below that a parallel region's start and barrier cost more than the
// work (and on an oversubscribed machine, a descheduled thread stalls the barrier).
int threads_for(std::span<const TensorSlot> slots) {
  int64_t total = 0;
  for (const TensorSlot& s : slots) total += s.numel;
  const int64_t wanted = (total + (int64_t{1} << 16) - 1) >> 16;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(wanted, precision::num_threads())));
}

void check_hyper(double lr, double weight_decay, const char* who) {
  if (!(lr >= 0.0) || !(lr < 1e30))
    throw InvalidArgument(std::string(who) + ": lr must be a finite number >= 0, got " + std::to_string(lr));
  if (!(weight_decay >= 0.0))
    throw InvalidArgument(std::string(who) + ": weight_decay must be >= 0, got " + std::to_string(weight_decay));
}

void check_options(const UpdateOptions& o, const char* who) {
  if (!(o.grad_scale >= 0.0f) || !(o.grad_scale < FLT_MAX))
    throw InvalidArgument(std::string(who) + ": grad_scale must be finite and >= 0, got " +
                          std::to_string(o.grad_scale));
  if (!(o.lr_factor >= 0.0))
    throw InvalidArgument(std::string(who) + ": lr_factor must be >= 0, got " + std::to_string(o.lr_factor));
}

// The SR draws one work item needs, span by span: the bf16 moments' streams and the master-less bf16
// parameter's. Streams that are not needed are not drawn.
struct ItemRandom {
  SpanRandom m, v, param;
  bool moments = false, parameter = false;
  uint64_t seed = 0, first = 0;
  int64_t t = 0;
  void draw(int64_t span_begin, int64_t n) {
    const uint64_t first_index = first + static_cast<uint64_t>(span_begin);
    if (moments) {
      m.draw(seed, philox_offset(t, kStreamM), first_index, n);
      v.draw(seed, philox_offset(t, kStreamV), first_index, n);
    }
    if (parameter) param.draw(seed, philox_offset(t, kStreamParam), first_index, n);
  }
  // This tile's draws, `at` elements into the span (nullptr for a stream not drawn).
  static const uint16_t* at(const SpanRandom& r, bool drawn, int64_t offset) { return drawn ? r.bits + offset : nullptr; }
};

// Prefetches the gradient and the FP32 values (master or fp32 parameter) `ahead` elements past b: the update
// stalls on their first touch in DRAM otherwise (the hardware prefetcher runs too few lines ahead of this many
// concurrent streams). Past the tensor's end nothing is fetched.
void prefetch_ahead(const TensorSlot& s, int64_t b, int64_t ahead) {
  const int64_t at = b + ahead;
  if (at + kTile > s.numel) return;
  const size_t grad_bytes = s.grad_type == ElementType::kFloat32 ? 4 : 2;
  const char* grad = static_cast<const char*>(s.grad) + at * static_cast<int64_t>(grad_bytes);
  const size_t value_bytes = s.master || s.param_type == ElementType::kFloat32 ? 4 : 2;
  const char* values = s.master ? reinterpret_cast<const char*>(s.master + at)
                                : static_cast<const char*>(s.param) + at * static_cast<int64_t>(value_bytes);
  for (size_t line = 0; line < kTile * grad_bytes; line += 64) __builtin_prefetch(grad + line);
  for (size_t line = 0; line < kTile * value_bytes; line += 64) __builtin_prefetch(values + line, 1);
}

void adamw_item(const TensorSlot& s, const WorkItem& item, const AdamWScalars sc, const UpdateOptions& options,
                ItemRandom& random) {
  const StateCodec codec = effective_codec(s.codec, s.numel);
  random.moments = codec == StateCodec::kBF16;
  random.parameter = param_uses_sr(s, options.stochastic_rounding);
  random.seed = options.seed;
  random.first = s.index_base;
  random.t = *s.step + 1;
  alignas(64) float g[kTile], p_tile[kTile], m_tile[kTile], v_tile[kTile];
  for (int64_t span = item.begin; span < item.end; span += kRandomSpan) {
    const int64_t span_end = std::min(item.end, span + kRandomSpan);
    random.draw(span, span_end - span);
    for (int64_t b = span; b < span_end; b += kTile) {
      const int n = static_cast<int>(std::min<int64_t>(kTile, span_end - b));
      prefetch_ahead(s, b, kPrefetchAhead);
      load_gradient(s, b, n, options.grad_scale, g);
      float* p = param_values(s, b, n, p_tile);
      float* m = moment_values(codec, s.m, true, b, n, m_tile);
      float* v = moment_values(codec, s.v, false, b, n, v_tile);
      adamw_tile(p, m, v, g, n, sc);
      write_param(s, b, n, p, ItemRandom::at(random.param, random.parameter, b - span));
      write_moment(codec, s.m, true, b, n, m, {ItemRandom::at(random.m, random.moments, b - span), options.dre_clamp_k});
      write_moment(codec, s.v, false, b, n, v, {ItemRandom::at(random.v, random.moments, b - span), options.dre_clamp_k});
    }
  }
}

void sgd_item(const TensorSlot& s, const WorkItem& item, const SgdScalars sc, bool has_momentum,
              const UpdateOptions& options, ItemRandom& random) {
  const StateCodec codec = effective_codec(s.codec, s.numel);
  random.moments = has_momentum && codec == StateCodec::kBF16;
  random.parameter = param_uses_sr(s, options.stochastic_rounding);
  random.seed = options.seed;
  random.first = s.index_base;
  random.t = *s.step + 1;
  alignas(64) float g[kTile], p_tile[kTile], m_tile[kTile];
  for (int64_t span = item.begin; span < item.end; span += kRandomSpan) {
    const int64_t span_end = std::min(item.end, span + kRandomSpan);
    random.draw(span, span_end - span);
    for (int64_t b = span; b < span_end; b += kTile) {
      const int n = static_cast<int>(std::min<int64_t>(kTile, span_end - b));
      load_gradient(s, b, n, options.grad_scale, g);
      float* p = param_values(s, b, n, p_tile);
      // Without momentum the rule never reads or writes the buffer: the tile is a scratch.
      float* m = has_momentum ? moment_values(codec, s.m, true, b, n, m_tile) : m_tile;
      sgd_tile(p, m, g, n, sc);
      write_param(s, b, n, p, ItemRandom::at(random.param, random.parameter, b - span));
      if (has_momentum)
        write_moment(codec, s.m, true, b, n, m, {ItemRandom::at(random.m, random.moments, b - span), options.dre_clamp_k});
    }
  }
}

}  // namespace

void adamw_update(std::span<const TensorSlot> slots, const AdamWHyper& hyper, const UpdateOptions& options) {
  check_hyper(hyper.lr, hyper.weight_decay, "AdamW");
  if (!(hyper.beta1 >= 0.0 && hyper.beta1 < 1.0) || !(hyper.beta2 >= 0.0 && hyper.beta2 < 1.0))
    throw InvalidArgument("AdamW: betas must be in [0, 1), got (" + std::to_string(hyper.beta1) + ", " +
                          std::to_string(hyper.beta2) + ")");
  if (!(hyper.eps >= 0.0)) throw InvalidArgument("AdamW: eps must be >= 0, got " + std::to_string(hyper.eps));
  check_options(options, "AdamW");
  validate(slots, true, true);
  std::vector<AdamWScalars> scalars(slots.size());
  for (size_t i = 0; i < slots.size(); ++i) scalars[i] = adamw_scalars(hyper, *slots[i].step + 1, options.lr_factor);
  const std::vector<WorkItem> items = split(slots);
#pragma omp parallel num_threads(threads_for(slots))
  {
    ItemRandom random;  // per thread: its Philox scratch is reused item after item
#pragma omp for schedule(dynamic, kItemsPerGrab)
    for (size_t w = 0; w < items.size(); ++w)
      adamw_item(slots[items[w].slot], items[w], scalars[items[w].slot], options, random);
  }
  for (const TensorSlot& s : slots) *s.step += 1;
}

void sgd_update(std::span<const TensorSlot> slots, const SgdHyper& hyper, const UpdateOptions& options) {
  check_hyper(hyper.lr, hyper.weight_decay, "SGD");
  if (!(hyper.momentum >= 0.0) || !(hyper.dampening >= 0.0 && hyper.dampening <= 1.0))
    throw InvalidArgument("SGD: momentum must be >= 0 and dampening in [0, 1], got momentum " +
                          std::to_string(hyper.momentum) + ", dampening " + std::to_string(hyper.dampening));
  if (hyper.nesterov && (hyper.momentum <= 0.0 || hyper.dampening != 0.0))
    throw InvalidArgument("SGD: nesterov needs momentum > 0 and dampening 0");
  check_options(options, "SGD");
  const bool has_momentum = hyper.momentum != 0.0;
  validate(slots, false, has_momentum);
  const std::vector<WorkItem> items = split(slots);
#pragma omp parallel num_threads(threads_for(slots))
  {
    ItemRandom random;
#pragma omp for schedule(dynamic, kItemsPerGrab)
    for (size_t w = 0; w < items.size(); ++w) {
      const TensorSlot& s = slots[items[w].slot];
      sgd_item(s, items[w], sgd_scalars(hyper, *s.step + 1, options.lr_factor), has_momentum, options, random);
    }
  }
  for (const TensorSlot& s : slots) *s.step += 1;
}

void encode_state(StateCodec codec, const float* x, int64_t n, const MomentView& out, bool is_signed, uint64_t seed,
                  uint64_t offset, uint64_t index_base, bool dre_clamp_k) {
  const StateCodec c = effective_codec(codec, n);
  validate_moment(0, "state", out, moment_layout(codec, n));
  SpanRandom random;
  for (int64_t span = 0; span < n; span += kRandomSpan) {
    const int64_t span_end = std::min(n, span + kRandomSpan);
    if (c == StateCodec::kBF16) random.draw(seed, offset, index_base + static_cast<uint64_t>(span), span_end - span);
    for (int64_t b = span; b < span_end; b += kTile) {
      const EncodeContext ctx{c == StateCodec::kBF16 ? random.bits + (b - span) : nullptr, dre_clamp_k};
      write_moment(c, out, is_signed, b, static_cast<int>(std::min<int64_t>(kTile, span_end - b)), x + b, ctx);
    }
  }
}

void decode_state(StateCodec codec, const MomentView& in, int64_t n, bool is_signed, float* out) {
  const StateCodec c = effective_codec(codec, n);
  validate_moment(0, "state", in, moment_layout(codec, n));
  for (int64_t b = 0; b < n; b += kTile) {
    const int len = static_cast<int>(std::min<int64_t>(kTile, n - b));
    const float* values = moment_values(c, in, is_signed, b, len, out + b);
    if (values != out + b) std::copy(values, values + len, out + b);  // fp32: the values themselves
  }
}

}  // namespace nibble::optim
