// The fused CPU optimizer step. The numerics are the shared scalar rules (optim/dre.h, dynamic_map.h,
// update_rules.h, precision/format.h); this file arranges them so one tile of 256 elements is decoded,
// updated, re-encoded and written while it sits in L1, each inner loop with loop-invariant choices only
// (so the compiler can vectorise it), and splits the tensors into fixed chunks for the OpenMP threads.
#include <omp.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cfloat>
#include <string>
#include <vector>

#include "optim/dre.h"
#include "optim/dynamic_map.h"
#include "optim/fused_step.h"
#include "precision/convert.h"
#include "precision/error.h"
#include "precision/stochastic.h"

namespace nibble::optim {
namespace {

using precision::bits_float;
using precision::encode_scalar;
using precision::float_bits;
using precision::Rounding;
namespace formats = precision::formats;

constexpr int64_t kChunk = 4096;  // work item: a multiple of 128 (fp8), 256 (int8) and 8 (Philox, 16-bit SR)
constexpr int kTile = 256;        // elements decoded/updated/encoded together
constexpr int kSrBits = 16;       // random bits for BF16 stochastic rounding (precision's default for 16-bit)

// E4M3 code -> float, from precision's decode_scalar (a gather instead of the decode arithmetic per element).
const float* e4m3_values() {
  static const std::vector<float> table = [] {
    std::vector<float> t(256);
    for (uint32_t c = 0; c < 256; ++c) t[c] = precision::decode_scalar(c, formats::kE4M3);
    return t;
  }();
  return table.data();
}

float bf16_to_float(uint16_t b) {
  return bits_float(static_cast<uint32_t>(b) << 16);
}

// The 16-bit SR draws of elements [first, first + count): those of precision::stochastic_bits(seed, offset,
// i, 16), one Philox call per 8 elements.
void random16(uint64_t seed, uint64_t offset, uint64_t first, int count, uint32_t* bits) {
  int j = 0;
  while (j < count) {
    const uint64_t sub = (first + j) / 8;
    const precision::Philox4x32Output out = precision::philox_block(seed, offset, sub);
    for (; j < count && (first + j) / 8 == sub; ++j) {
      const uint64_t e = first + j;
      bits[j] = (out.v[(e / 2) % 4] >> ((e % 2) * 16)) & 0xFFFFu;
    }
  }
}

// int8 codes of x[0..n) / norm: dynamic_map_encode's eight comparisons. GCC does not emit gathers when tuning
// for Zen, so with AVX-512 the same search runs 16 elements at a time with explicit gathers (the comparisons
// and the division are the scalar rule's, so the codes are identical).
void encode_dynamic(const float* x, int n, float norm, const float* threshold, uint8_t* codes) {
  int j = 0;
#if defined(__AVX512F__)
  const __m512 vnorm = _mm512_set1_ps(norm);
  for (; j + 16 <= n; j += 16) {
    const __m512 v = _mm512_div_ps(_mm512_loadu_ps(x + j), vnorm);
    __m512i idx = _mm512_setzero_si512();
    for (int step = 128; step >= 1; step /= 2) {
      const __m512i probe = _mm512_add_epi32(idx, _mm512_set1_epi32(step - 1));
      // (masked forms with explicit sources: GCC 12's unmasked intrinsics trip -Wmaybe-uninitialized)
      const __m512 t = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), 0xFFFF, probe, threshold, 4);
      idx = _mm512_mask_add_epi32(idx, _mm512_cmp_ps_mask(v, t, _CMP_GT_OQ), idx, _mm512_set1_epi32(step));
    }
    _mm512_mask_cvtepi32_storeu_epi8(codes + j, 0xFFFF, idx);
  }
#endif
  for (; j < n; ++j) codes[j] = static_cast<uint8_t>(dynamic_map_encode(x[j] / norm, threshold));
}

void decode_moment(StateCodec codec, const MomentView& mv, bool is_signed, int64_t begin, int n, float* out) {
  switch (codec) {
    case StateCodec::kFP32: {
      const float* src = static_cast<const float*>(mv.values) + begin;
      for (int j = 0; j < n; ++j) out[j] = src[j];
      break;
    }
    case StateCodec::kBF16: {
      const uint16_t* src = static_cast<const uint16_t*>(mv.values) + begin;
      for (int j = 0; j < n; ++j) out[j] = bf16_to_float(src[j]);
      break;
    }
    case StateCodec::kFP8: {
      const uint8_t* codes = static_cast<const uint8_t*>(mv.values) + begin;
      const float* table = e4m3_values();
      for (int g0 = 0; g0 < n; g0 += kDreGroupSize) {
        const int64_t grp_index = (begin + g0) / kDreGroupSize;
        const float scale = mv.scale[grp_index], k = mv.expansion[grp_index], centre = mv.centre[grp_index];
        const int end = std::min(n, g0 + kDreGroupSize);
        // Two loops: the table lookup (a gather, which GCC does not vectorise when tuning for Zen) writes the
        // E4M3 values, then the DRE decode (two transcendentals per element) runs vectorised over them.
        for (int j = g0; j < end; ++j) out[j] = table[codes[j]];
        for (int j = g0; j < end; ++j) out[j] = dre_decode(out[j], k, centre, scale);
      }
      break;
    }
    case StateCodec::kFP8Plain: {
      const uint8_t* codes = static_cast<const uint8_t*>(mv.values) + begin;
      const float* table = e4m3_values();
      for (int g0 = 0; g0 < n; g0 += kDreGroupSize) {
        const float scale = mv.scale[(begin + g0) / kDreGroupSize];
        const int end = std::min(n, g0 + kDreGroupSize);
        for (int j = g0; j < end; ++j) out[j] = plain_fp8_decode(table[codes[j]], scale);
      }
      break;
    }
    case StateCodec::kInt8: {
      // A tile is exactly one 256-element block (chunks and tiles start at multiples of 256).
      const uint8_t* codes = static_cast<const uint8_t*>(mv.values) + begin;
      const float* values = dynamic_map(is_signed).value;
      const float absmax = mv.scale[begin / kInt8BlockSize];
      for (int j = 0; j < n; ++j) out[j] = values[codes[j]] * absmax;
      break;
    }
  }
}

struct EncodeContext {
  uint64_t seed = 0;
  uint64_t offset = 0;      // Philox offset of this moment's stream (bf16 SR)
  uint64_t index_base = 0;  // the tensor's global index of element 0
  bool clamp_k = false;
};

void encode_moment(StateCodec codec, const MomentView& mv, bool is_signed, int64_t begin, int n, const float* x,
                   const EncodeContext& ctx) {
  switch (codec) {
    case StateCodec::kFP32: {
      float* dst = static_cast<float*>(mv.values) + begin;
      for (int j = 0; j < n; ++j) dst[j] = x[j];
      break;
    }
    case StateCodec::kBF16: {
      // Stochastic rounding: beta2 = 0.999 changes v by less than half a BF16 ulp per step, which RNE
      // would drop every time.
      uint32_t bits[kTile];
      random16(ctx.seed, ctx.offset, ctx.index_base + begin, n, bits);
      uint16_t* dst = static_cast<uint16_t*>(mv.values) + begin;
      for (int j = 0; j < n; ++j)
        dst[j] = static_cast<uint16_t>(
            encode_scalar(x[j], formats::kBF16, Rounding::kStochastic, precision::RandomBits{bits[j], kSrBits}));
      break;
    }
    case StateCodec::kFP8: {
      uint8_t* codes = static_cast<uint8_t*>(mv.values) + begin;
      for (int g0 = 0; g0 < n; g0 += kDreGroupSize) {
        const int end = std::min(n, g0 + kDreGroupSize);
        // On the bits of |x|: for non-negative floats integer order is value order, and integer max/min
        // reductions vectorise (float ones do not without -ffinite-math-only). An all-zero group keeps
        // min = FLT_MAX ("no nonzero element").
        uint32_t max_bits = 0, min_bits = float_bits(FLT_MAX);
        for (int j = g0; j < end; ++j) {
          const uint32_t a = float_bits(x[j]) & 0x7FFFFFFFu;
          max_bits = std::max(max_bits, a);
          min_bits = std::min(min_bits, a == 0u ? 0xFFFFFFFFu : a);
        }
        const DreGroup grp =
            dre_group(bits_float(max_bits), bits_float(std::min(min_bits, float_bits(FLT_MAX))), ctx.clamp_k);
        const int64_t grp_index = (begin + g0) / kDreGroupSize;
        mv.scale[grp_index] = grp.scale;
        mv.expansion[grp_index] = grp.expansion;
        mv.centre[grp_index] = grp.centre;
        // dre_encode in two loops (expand, then cast), each of which vectorises on its own.
        float y[kDreGroupSize];
        const float k = grp.expansion, centre = grp.centre, scale = grp.scale;
        for (int j = g0; j < end; ++j) y[j - g0] = dre_expand(x[j], k, centre, scale);
        for (int j = g0; j < end; ++j)
          codes[j] = static_cast<uint8_t>(encode_scalar(y[j - g0], formats::kE4M3, Rounding::kNearestEven));
      }
      break;
    }
    case StateCodec::kFP8Plain: {
      uint8_t* codes = static_cast<uint8_t*>(mv.values) + begin;
      for (int g0 = 0; g0 < n; g0 += kDreGroupSize) {
        const int end = std::min(n, g0 + kDreGroupSize);
        float max_abs = 0.0f;
        for (int j = g0; j < end; ++j) max_abs = std::max(max_abs, fabsf(x[j]));
        const float scale = plain_fp8_scale(max_abs);
        mv.scale[(begin + g0) / kDreGroupSize] = scale;
        for (int j = g0; j < end; ++j) codes[j] = static_cast<uint8_t>(plain_fp8_encode(x[j], scale));
      }
      break;
    }
    case StateCodec::kInt8: {
      uint8_t* codes = static_cast<uint8_t*>(mv.values) + begin;
      const float* threshold = dynamic_map(is_signed).threshold;
      float max_abs = 0.0f;
      for (int j = 0; j < n; ++j) max_abs = std::max(max_abs, fabsf(x[j]));
      const float norm = max_abs > 0.0f ? max_abs : 1.0f;  // an all-zero block encodes 0 / 1 = 0
      mv.scale[begin / kInt8BlockSize] = max_abs;
      encode_dynamic(x, n, norm, threshold, codes);
      break;
    }
  }
}

void load_gradient(const TensorSlot& s, int64_t begin, int n, float scale, float* g) {
  if (s.grad_type == ElementType::kFloat32) {
    const float* src = static_cast<const float*>(s.grad) + begin;
    for (int j = 0; j < n; ++j) g[j] = src[j] * scale;
  } else {
    const uint16_t* src = static_cast<const uint16_t*>(s.grad) + begin;
    for (int j = 0; j < n; ++j) g[j] = bf16_to_float(src[j]) * scale;
  }
}

void load_param(const TensorSlot& s, int64_t begin, int n, float* p) {
  if (s.master) {
    for (int j = 0; j < n; ++j) p[j] = s.master[begin + j];
  } else if (s.param_type == ElementType::kFloat32) {
    const float* src = static_cast<const float*>(s.param) + begin;
    for (int j = 0; j < n; ++j) p[j] = src[j];
  } else {
    const uint16_t* src = static_cast<const uint16_t*>(s.param) + begin;
    for (int j = 0; j < n; ++j) p[j] = bf16_to_float(src[j]);
  }
}

void store_param(const TensorSlot& s, int64_t begin, int n, const float* p, uint64_t seed, int64_t step,
                 bool stochastic) {
  if (s.master)
    for (int j = 0; j < n; ++j) s.master[begin + j] = p[j];
  if (s.param_type == ElementType::kFloat32) {
    float* dst = static_cast<float*>(s.param) + begin;
    for (int j = 0; j < n; ++j) dst[j] = p[j];
    return;
  }
  uint16_t* dst = static_cast<uint16_t*>(s.param) + begin;
  if (s.master || !stochastic) {
    // The model copy of a master, or the RNE ablation of master-less training.
    for (int j = 0; j < n; ++j)
      dst[j] = static_cast<uint16_t>(encode_scalar(p[j], formats::kBF16, Rounding::kNearestEven));
    return;
  }
  uint32_t bits[kTile];
  random16(seed, philox_offset(step, kStreamParam), s.index_base + begin, n, bits);
  for (int j = 0; j < n; ++j)
    dst[j] = static_cast<uint16_t>(
        encode_scalar(p[j], formats::kBF16, Rounding::kStochastic, precision::RandomBits{bits[j], kSrBits}));
}

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
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads_for(slots))
  for (size_t w = 0; w < items.size(); ++w) {
    const WorkItem& item = items[w];
    const TensorSlot& s = slots[item.slot];
    const AdamWScalars& sc = scalars[item.slot];
    const StateCodec codec = effective_codec(s.codec, s.numel);
    const int64_t t = *s.step + 1;
    const EncodeContext m_ctx{options.seed, philox_offset(t, kStreamM), s.index_base, options.dre_clamp_k};
    const EncodeContext v_ctx{options.seed, philox_offset(t, kStreamV), s.index_base, options.dre_clamp_k};
    float g[kTile], p[kTile], m[kTile], v[kTile];
    for (int64_t b = item.begin; b < item.end; b += kTile) {
      const int n = static_cast<int>(std::min<int64_t>(kTile, item.end - b));
      load_gradient(s, b, n, options.grad_scale, g);
      load_param(s, b, n, p);
      decode_moment(codec, s.m, true, b, n, m);
      decode_moment(codec, s.v, false, b, n, v);
      for (int j = 0; j < n; ++j) adamw_element(p[j], m[j], v[j], g[j], sc);
      store_param(s, b, n, p, options.seed, t, options.stochastic_rounding);
      encode_moment(codec, s.m, true, b, n, m, m_ctx);
      encode_moment(codec, s.v, false, b, n, v, v_ctx);
    }
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
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads_for(slots))
  for (size_t w = 0; w < items.size(); ++w) {
    const WorkItem& item = items[w];
    const TensorSlot& s = slots[item.slot];
    const StateCodec codec = effective_codec(s.codec, s.numel);
    const int64_t t = *s.step + 1;
    const SgdScalars sc = sgd_scalars(hyper, t, options.lr_factor);
    const EncodeContext m_ctx{options.seed, philox_offset(t, kStreamM), s.index_base, options.dre_clamp_k};
    float g[kTile], p[kTile], m[kTile];
    for (int64_t b = item.begin; b < item.end; b += kTile) {
      const int n = static_cast<int>(std::min<int64_t>(kTile, item.end - b));
      load_gradient(s, b, n, options.grad_scale, g);
      load_param(s, b, n, p);
      if (has_momentum) decode_moment(codec, s.m, true, b, n, m);
      for (int j = 0; j < n; ++j) sgd_element(p[j], m[j], g[j], sc);
      store_param(s, b, n, p, options.seed, t, options.stochastic_rounding);
      if (has_momentum) encode_moment(codec, s.m, true, b, n, m, m_ctx);
    }
  }
  for (const TensorSlot& s : slots) *s.step += 1;
}

void encode_state(StateCodec codec, const float* x, int64_t n, const MomentView& out, bool is_signed, uint64_t seed,
                  uint64_t offset, uint64_t index_base, bool dre_clamp_k) {
  const StateCodec c = effective_codec(codec, n);
  validate_moment(0, "state", out, moment_layout(codec, n));
  const EncodeContext ctx{seed, offset, index_base, dre_clamp_k};
  for (int64_t b = 0; b < n; b += kTile)
    encode_moment(c, out, is_signed, b, static_cast<int>(std::min<int64_t>(kTile, n - b)), x + b, ctx);
}

void decode_state(StateCodec codec, const MomentView& in, int64_t n, bool is_signed, float* out) {
  const StateCodec c = effective_codec(codec, n);
  validate_moment(0, "state", in, moment_layout(codec, n));
  for (int64_t b = 0; b < n; b += kTile)
    decode_moment(c, in, is_signed, b, static_cast<int>(std::min<int64_t>(kTile, n - b)), out + b);
}

}  // namespace nibble::optim
