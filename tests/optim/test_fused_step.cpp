// The fused CPU step: FP32 states against a plain per-element loop, compressed states against FP32 states,
// master / master-less parameter writes, thread-count independence, gradient checks, and bit-exact state
// serialisation for every codec.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "optim/clip.h"
#include "optim/dre.h"
#include "optim/dynamic_map.h"
#include "optim/fused_step.h"
#include "optim/grad_check.h"
#include "optim/serialize.h"
#include "precision/convert.h"
#include "precision/error.h"
#include "precision/stochastic.h"

namespace nibble::optim {
namespace {

constexpr StateCodec kAllCodecs[] = {StateCodec::kFP32, StateCodec::kBF16, StateCodec::kFP8, StateCodec::kFP8Plain,
                                     StateCodec::kInt8};

struct OwnedMoment {
  std::vector<uint8_t> values;
  std::vector<float> scale, expansion, centre;
  MomentView view() {
    return MomentView{values.data(), scale.empty() ? nullptr : scale.data(),
                      expansion.empty() ? nullptr : expansion.data(), centre.empty() ? nullptr : centre.data()};
  }
  explicit OwnedMoment(const MomentLayout& L)
      : values(static_cast<size_t>(L.value_bytes), 0),
        scale(L.has_scale ? L.groups : 0, 0.0f),
        expansion(L.has_expansion ? L.groups : 0, 1.0f),
        centre(L.has_centre ? L.groups : 0, 1.0f) {}
  bool operator==(const OwnedMoment& o) const {
    return values == o.values && scale == o.scale && expansion == o.expansion && centre == o.centre;
  }
};

// A float32 (or bfloat16) parameter with its gradient, state and optional FP32 master.
struct Tensor {
  int64_t n;
  StateCodec codec;
  bool bf16;
  std::vector<float> param32, master, grad;
  std::vector<uint16_t> param16;
  OwnedMoment m, v;
  int64_t step = 0;
  Tensor(int64_t numel, StateCodec c, bool bf16_param, bool with_master, uint32_t seed)
      : n(numel), codec(c), bf16(bf16_param), m(moment_layout(c, numel)), v(moment_layout(c, numel)) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> init(n);
    for (float& x : init) x = normal(rng) * 0.1f;
    if (bf16) {
      param16.resize(n);
      for (int64_t i = 0; i < n; ++i)
        param16[i] = static_cast<uint16_t>(
            precision::encode_scalar(init[i], precision::formats::kBF16, precision::Rounding::kNearestEven));
      if (with_master) {
        master.resize(n);
        for (int64_t i = 0; i < n; ++i) master[i] = param_value(i);
      }
    } else {
      param32 = init;
      if (with_master) master = init;
    }
    grad.resize(n);
  }
  float param_value(int64_t i) const {
    return bf16 ? precision::bits_float(static_cast<uint32_t>(param16[i]) << 16) : param32[i];
  }
  void new_gradient(std::mt19937& rng, float scale) {
    std::normal_distribution<float> normal(0.0f, scale);
    for (float& g : grad) g = normal(rng);
  }
  TensorSlot slot(uint64_t index_base = 0) {
    TensorSlot s;
    s.numel = n;
    s.param = bf16 ? static_cast<void*>(param16.data()) : static_cast<void*>(param32.data());
    s.param_type = bf16 ? ElementType::kBFloat16 : ElementType::kFloat32;
    s.master = master.empty() ? nullptr : master.data();
    s.grad = grad.data();
    s.codec = codec;
    s.m = m.view();
    s.v = v.view();
    s.step = &step;
    s.index_base = index_base;
    return s;
  }
};

TEST(FusedStep, Fp32StateEqualsThePlainLoopBitForBit) {
  const AdamWHyper h{1e-2, 0.9, 0.999, 1e-8, 0.1};
  Tensor t(5000, StateCodec::kFP32, false, false, 1);
  std::vector<float> p = t.param32, m(t.n, 0.0f), v(t.n, 0.0f);
  std::mt19937 rng(2);
  for (int step = 1; step <= 20; ++step) {
    t.new_gradient(rng, 1.0f);
    TensorSlot s = t.slot();
    adamw_update({&s, 1}, h, UpdateOptions{});
    const AdamWScalars sc = adamw_scalars(h, step, 1.0);
    for (int64_t i = 0; i < t.n; ++i) adamw_element(p[i], m[i], v[i], t.grad[i], sc);
  }
  EXPECT_EQ(t.step, 20);
  EXPECT_EQ(std::memcmp(p.data(), t.param32.data(), 4 * t.n), 0);
  EXPECT_EQ(std::memcmp(m.data(), t.m.values.data(), 4 * t.n), 0);
  EXPECT_EQ(std::memcmp(v.data(), t.v.values.data(), 4 * t.n), 0);
}

TEST(FusedStep, CompressedStatesTrackFp32States) {
  const AdamWHyper h{1e-3, 0.9, 0.999, 1e-8, 0.0};
  for (StateCodec codec : {StateCodec::kBF16, StateCodec::kFP8, StateCodec::kFP8Plain, StateCodec::kInt8}) {
    Tensor ref(10000, StateCodec::kFP32, false, false, 3), q(10000, codec, false, false, 3);
    const std::vector<float> init = ref.param32;
    std::mt19937 rng(4);
    for (int step = 0; step < 30; ++step) {
      ref.new_gradient(rng, 1.0f);
      q.grad = ref.grad;
      TensorSlot a = ref.slot(), b = q.slot();
      adamw_update({&a, 1}, h, UpdateOptions{});
      adamw_update({&b, 1}, h, UpdateOptions{});
    }
    // The compressed run's parameter trajectory stays within 10% of the distance the FP32 run moved.
    double diff = 0, norm = 0;
    for (int64_t i = 0; i < ref.n; ++i) {
      diff += std::pow(q.param32[i] - ref.param32[i], 2.0);
      norm += std::pow(ref.param32[i] - init[i], 2.0);
    }
    EXPECT_LT(std::sqrt(diff / norm), 0.1) << state_codec_name(codec);
  }
}

TEST(FusedStep, ResultsDoNotDependOnTheThreadCount) {
  const AdamWHyper h{1e-3, 0.9, 0.999, 1e-8, 0.01};
  for (StateCodec codec : kAllCodecs) {
    for (bool bf16 : {false, true}) {
      std::vector<std::unique_ptr<Tensor>> runs;
      for (int threads : {1, 2}) {
        precision::set_num_threads(threads);
        auto t = std::make_unique<Tensor>(140000 + 77, codec, bf16, false, 5);  // > 64K: two threads
        std::mt19937 rng(6);
        for (int step = 0; step < 3; ++step) {
          t->new_gradient(rng, 1.0f);
          TensorSlot s = t->slot(1000);
          adamw_update({&s, 1}, h, UpdateOptions{});
        }
        runs.push_back(std::move(t));
      }
      precision::set_num_threads(0);
      EXPECT_TRUE(runs[0]->m == runs[1]->m && runs[0]->v == runs[1]->v) << state_codec_name(codec);
      EXPECT_EQ(runs[0]->param32, runs[1]->param32);
      EXPECT_EQ(runs[0]->param16, runs[1]->param16);
    }
  }
}

TEST(FusedStep, MasterWritesAnRneModelCopy) {
  Tensor t(3000, StateCodec::kFP32, true, true, 7);
  std::mt19937 rng(8);
  t.new_gradient(rng, 1.0f);
  TensorSlot s = t.slot();
  adamw_update({&s, 1}, AdamWHyper{}, UpdateOptions{});
  for (int64_t i = 0; i < t.n; ++i)
    ASSERT_EQ(t.param16[i],
              precision::encode_scalar(t.master[i], precision::formats::kBF16, precision::Rounding::kNearestEven));
}

TEST(FusedStep, MasterlessBf16UsesStochasticRoundingThatIsUnbiased) {
  // An update of 1/8 BF16 ulp: RNE never moves the parameter, SR moves 1/8 of them by one ulp.
  const int64_t n = 1 << 16;
  for (bool sr : {false, true}) {
    Tensor t(n, StateCodec::kFP32, true, false, 9);
    for (int64_t i = 0; i < n; ++i) t.param16[i] = 0x3F80;  // 1.0, ulp 2^-7
    std::fill(t.grad.begin(), t.grad.end(), 1.0f);
    TensorSlot s = t.slot();
    UpdateOptions o;
    o.stochastic_rounding = sr;
    SgdHyper h{std::ldexp(1.0, -10), 0.0, 0.0, 0.0, false};  // p -= 2^-10 * 1
    sgd_update({&s, 1}, h, o);
    double mean = 0;
    for (int64_t i = 0; i < n; ++i) mean += t.param_value(i);
    mean /= n;
    if (sr) {
      EXPECT_NEAR(mean, 1.0 - std::ldexp(1.0, -10), 4 * std::ldexp(1.0, -8) * std::sqrt(0.125 / n));
    } else {
      EXPECT_EQ(mean, 1.0);
    }
  }
}

TEST(FusedStep, SgdMatchesTorchsRule) {
  Tensor t(300, StateCodec::kFP32, false, false, 10);
  std::vector<float> p = t.param32, buf(t.n);
  const SgdHyper h{0.05, 0.9, 0.1, 0.01, false};
  std::mt19937 rng(11);
  for (int step = 1; step <= 5; ++step) {
    t.new_gradient(rng, 1.0f);
    TensorSlot s = t.slot();
    sgd_update({&s, 1}, h, UpdateOptions{});
    for (int64_t i = 0; i < t.n; ++i) {
      const float d = t.grad[i] + 0.01f * p[i];
      buf[i] = step == 1 ? d : buf[i] * 0.9f + 0.9f * d;
      p[i] = p[i] + (-0.05f) * buf[i];
    }
  }
  for (int64_t i = 0; i < t.n; ++i) ASSERT_EQ(p[i], t.param32[i]) << i;
}

TEST(FusedStep, InvalidInputIsRejectedWithTheReason) {
  Tensor t(300, StateCodec::kFP8, false, false, 12);
  TensorSlot s = t.slot();
  s.m.centre = nullptr;
  try {
    adamw_update({&s, 1}, AdamWHyper{}, UpdateOptions{});
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("centre"), std::string::npos) << e.what();
  }
  s = t.slot();
  EXPECT_THROW(adamw_update({&s, 1}, AdamWHyper{1e-3, 1.0, 0.999, 1e-8, 0.0}, UpdateOptions{}), InvalidArgument);
  EXPECT_THROW(adamw_update({&s, 1}, AdamWHyper{-1.0, 0.9, 0.999, 1e-8, 0.0}, UpdateOptions{}), InvalidArgument);
  EXPECT_EQ(t.step, 0);  // nothing ran
}

TEST(GradCheck, NormAndFirstNonFiniteTensor) {
  std::vector<float> a(40000, 0.5f), b(7, 2.0f);
  std::vector<uint16_t> c(100, 0x3F80);  // bf16 1.0
  std::vector<GradientView> views = {{a.data(), ElementType::kFloat32, 40000},
                                     {b.data(), ElementType::kFloat32, 7},
                                     {c.data(), ElementType::kBFloat16, 100}};
  GradientReport r = check_gradients(views);
  EXPECT_EQ(r.first_nonfinite, -1);
  EXPECT_DOUBLE_EQ(r.sum_squares, 40000 * 0.25 + 7 * 4.0 + 100);
  b[3] = NAN;
  c[5] = 0x7F80;  // +Inf
  r = check_gradients(views);
  EXPECT_EQ(r.first_nonfinite, 1);
  EXPECT_EQ(r.nonfinite_element, 3);
  b[3] = 1.0f;
  r = check_gradients(views);
  EXPECT_EQ(r.first_nonfinite, 2);
  EXPECT_EQ(r.nonfinite_element, 5);
}

// optim/clip.h is the one clipping rule (the trainer, global clipping, ZeRO-1, the optimizer, the CUDA step and
// Python all call it): torch.nn.utils.clip_grad_norm_'s min(1, max / (norm + 1e-6)), exactly.
TEST(Clip, TorchRuleAtTheBoundaryAndOff) {
  EXPECT_EQ(clip_coefficient(10.0, 1.0), static_cast<float>(1.0 / (10.0 + 1e-6)));
  EXPECT_EQ(clip_coefficient(0.5, 1.0), 1.0f);
  for (double max : {1.0, 0.25, 3.0, 1e-3}) {
    // norm == max already clips (the 1e-6 guard; the trainer's former "norm > max" rule gave 1 here).
    const float at = clip_coefficient(max, max);
    EXPECT_EQ(at, static_cast<float>(max / (max + 1e-6))) << max;
    EXPECT_LT(at, 1.0f) << max;
    const double above = std::nextafter(max, 2 * max);
    EXPECT_EQ(clip_coefficient(above, max), static_cast<float>(max / (above + 1e-6))) << max;
    EXPECT_LE(clip_coefficient(above, max), at) << max;
    // Well below max: no clipping.
    EXPECT_EQ(clip_coefficient(max / 2, max), 1.0f) << max;
  }
  // A non-finite norm moves nothing; max_norm <= 0 means clipping is off.
  EXPECT_EQ(clip_coefficient(INFINITY, 1.0), 0.0f);
  EXPECT_EQ(clip_coefficient(NAN, 1.0), 0.0f);
  EXPECT_EQ(clip_coefficient(100.0, 0.0), 1.0f);
  EXPECT_EQ(clip_coefficient(NAN, 0.0), 1.0f);
}

TEST(Serialize, EveryCodecRoundTripsBitForBit) {
  for (StateCodec codec : kAllCodecs) {
    for (bool master : {false, true}) {
      Tensor t(5000 + 13, codec, master, master, 13);
      std::mt19937 rng(14);
      for (int step = 0; step < 3; ++step) {
        t.new_gradient(rng, 1.0f);
        TensorSlot s = t.slot();
        adamw_update({&s, 1}, AdamWHyper{}, UpdateOptions{});
      }
      const std::vector<uint8_t> blob = serialize_tensor_state(t.slot(), 2);
      Tensor fresh(5000 + 13, codec, master, master, 99);
      deserialize_tensor_state(blob.data(), blob.size(), fresh.slot(), 2);
      EXPECT_EQ(fresh.step, 3);
      EXPECT_TRUE(fresh.m == t.m && fresh.v == t.v) << state_codec_name(codec);
      // (memcmp of two empty vectors would pass null pointers: undefined behaviour, which UBSan reports.)
      ASSERT_EQ(fresh.master.size(), t.master.size());
      if (!t.master.empty()) {
        EXPECT_EQ(std::memcmp(fresh.master.data(), t.master.data(), 4 * t.master.size()), 0);
      }
      EXPECT_EQ(serialize_tensor_state(fresh.slot(), 2), blob);
      // The next step from the restored state equals the next step from the original.
      t.new_gradient(rng, 1.0f);
      fresh.grad = t.grad;
      if (master)
        fresh.param16 = t.param16;
      else
        fresh.param32 = t.param32;
      TensorSlot a = t.slot(), b = fresh.slot();
      adamw_update({&a, 1}, AdamWHyper{}, UpdateOptions{});
      adamw_update({&b, 1}, AdamWHyper{}, UpdateOptions{});
      EXPECT_TRUE(fresh.m == t.m && fresh.v == t.v && fresh.param32 == t.param32 && fresh.param16 == t.param16);
    }
  }
}

TEST(Serialize, MismatchesAreNamed) {
  Tensor t(5000, StateCodec::kFP8, false, false, 15);
  const std::vector<uint8_t> blob = serialize_tensor_state(t.slot(), 2);
  Tensor other_codec(5000, StateCodec::kInt8, false, false, 15);
  try {
    deserialize_tensor_state(blob.data(), blob.size(), other_codec.slot(), 2);
    FAIL() << "no error";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("fp8"), std::string::npos) << e.what();
  }
  Tensor other_size(5001, StateCodec::kFP8, false, false, 15);
  EXPECT_THROW(deserialize_tensor_state(blob.data(), blob.size(), other_size.slot(), 2), InvalidArgument);
  EXPECT_THROW(deserialize_tensor_state(blob.data(), blob.size() - 1, t.slot(), 2), InvalidArgument);
  EXPECT_THROW(deserialize_tensor_state(blob.data(), blob.size(), t.slot(), 1), InvalidArgument);
  std::vector<uint8_t> bad = blob;
  bad[0] = 'X';
  EXPECT_THROW(deserialize_tensor_state(bad.data(), bad.size(), t.slot(), 2), InvalidArgument);
}


// encode_state's int8 path (vectorised search on AVX-512 machines) gives exactly the scalar rule's codes:
// dynamic_map_encode of x / absmax per 256-block, including values sitting exactly on the code values, zeros,
// negatives and a ragged last block.
TEST(EncodeState, Int8CodesEqualTheScalarRule) {
  const int64_t n = 4096 + 3 * 256 + 77;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (bool is_signed : {true, false}) {
    const DynamicMap& map = dynamic_map(is_signed);
    std::vector<float> x(n);
    for (int64_t i = 0; i < n; ++i) {
      float v = normal(rng) * (i % 5 == 0 ? 1e-3f : 1.0f);
      if (i % 7 == 0) v = map.value[i % 256];  // exactly a code value (block absmax then rescales it)
      if (i % 11 == 0) v = 0.0f;
      x[i] = is_signed ? v : std::fabs(v);
    }
    const MomentLayout layout = moment_layout(StateCodec::kInt8, n);
    std::vector<uint8_t> codes(n);
    std::vector<float> absmax(layout.groups);
    encode_state(StateCodec::kInt8, x.data(), n, MomentView{codes.data(), absmax.data(), nullptr, nullptr},
                 is_signed);
    for (int64_t b = 0; b * kInt8BlockSize < n; ++b) {
      float mx = 0.0f;
      const int64_t end = std::min(n, (b + 1) * kInt8BlockSize);
      for (int64_t i = b * kInt8BlockSize; i < end; ++i) mx = std::max(mx, std::fabs(x[i]));
      ASSERT_EQ(absmax[b], mx);
      const float norm = mx > 0.0f ? mx : 1.0f;
      for (int64_t i = b * kInt8BlockSize; i < end; ++i)
        ASSERT_EQ(codes[i], dynamic_map_encode(x[i] / norm, map.threshold)) << "element " << i << " x " << x[i];
    }
  }
}


// ---- The fused step against the scalar rules, element by element, bit for bit ----------------------------
// A plain per-element AdamW step written from the shared rules (update_rules.h, dre.h, dynamic_map.h,
// precision's encode_scalar / stochastic_bits): whatever the fused step does to be fast (tiles, in-place
// updates, vector loops, permute lookups, Philox in batches), its bytes must be these.

using precision::Rounding;
namespace formats = precision::formats;

float reference_decode(StateCodec codec, const OwnedMoment& mom, bool is_signed, int64_t i) {
  switch (codec) {
    case StateCodec::kFP32: {
      float x;
      std::memcpy(&x, mom.values.data() + 4 * i, 4);
      return x;
    }
    case StateCodec::kBF16: {
      uint16_t b;
      std::memcpy(&b, mom.values.data() + 2 * i, 2);
      return precision::bits_float(static_cast<uint32_t>(b) << 16);
    }
    case StateCodec::kFP8: {
      const int64_t grp = i / kDreGroupSize;
      return dre_decode(precision::decode_scalar(mom.values[i], formats::kE4M3), mom.expansion[grp], mom.centre[grp],
                        mom.scale[grp]);
    }
    case StateCodec::kFP8Plain:
      return plain_fp8_decode(precision::decode_scalar(mom.values[i], formats::kE4M3), mom.scale[i / kDreGroupSize]);
    case StateCodec::kInt8:
      return dynamic_map(is_signed).value[mom.values[i]] * mom.scale[i / kInt8BlockSize];
  }
  return 0.0f;
}

// Encodes all of x into `mom` by the scalar rules; `offset` is the moment's Philox stream for bf16.
void reference_encode(StateCodec codec, const std::vector<float>& x, bool is_signed, uint64_t seed, uint64_t offset,
                      uint64_t index_base, bool clamp_k, OwnedMoment& mom) {
  const int64_t n = static_cast<int64_t>(x.size());
  const int group = codec_group_size(codec);
  const int64_t span = group ? group : std::max<int64_t>(n, 1);  // fp32, bf16: no groups, one pass
  for (int64_t g0 = 0; g0 < n; g0 += span) {
    const int64_t end = std::min(n, g0 + span);
    float max_abs = 0.0f, min_nonzero = FLT_MAX;  // the test data hold no NaN
    for (int64_t i = g0; i < end; ++i) {
      max_abs = std::max(max_abs, std::fabs(x[i]));
      if (x[i] != 0.0f) min_nonzero = std::min(min_nonzero, std::fabs(x[i]));
    }
    const DreGroup grp = dre_group(max_abs, min_nonzero, clamp_k);
    const float plain_scale = plain_fp8_scale(max_abs);
    const float norm = max_abs > 0.0f ? max_abs : 1.0f;
    if (codec == StateCodec::kFP8) {
      mom.scale[g0 / group] = grp.scale;
      mom.expansion[g0 / group] = grp.expansion;
      mom.centre[g0 / group] = grp.centre;
    } else if (codec == StateCodec::kFP8Plain) {
      mom.scale[g0 / group] = plain_scale;
    } else if (codec == StateCodec::kInt8) {
      mom.scale[g0 / group] = max_abs;
    }
    for (int64_t i = g0; i < end; ++i) {
      switch (codec) {
        case StateCodec::kFP32:
          std::memcpy(mom.values.data() + 4 * i, &x[i], 4);
          break;
        case StateCodec::kBF16: {
          const uint32_t bits = precision::stochastic_bits(seed, offset, index_base + i, 16);
          const uint16_t b = static_cast<uint16_t>(
              precision::encode_scalar(x[i], formats::kBF16, Rounding::kStochastic, precision::RandomBits{bits, 16}));
          std::memcpy(mom.values.data() + 2 * i, &b, 2);
          break;
        }
        case StateCodec::kFP8:
          mom.values[i] = static_cast<uint8_t>(dre_encode(x[i], grp));
          break;
        case StateCodec::kFP8Plain:
          mom.values[i] = static_cast<uint8_t>(plain_fp8_encode(x[i], plain_scale));
          break;
        case StateCodec::kInt8:
          mom.values[i] = static_cast<uint8_t>(dynamic_map_encode(x[i] / norm, dynamic_map(is_signed).threshold));
          break;
      }
    }
  }
}

// One AdamW step of `t` by the scalar rules.
void reference_adamw(Tensor& t, const AdamWHyper& h, const UpdateOptions& o, uint64_t index_base) {
  const StateCodec codec = effective_codec(t.codec, t.n);
  const int64_t step = t.step + 1;
  const AdamWScalars sc = adamw_scalars(h, step, o.lr_factor);
  std::vector<float> m(t.n), v(t.n);
  for (int64_t i = 0; i < t.n; ++i) {
    float p = t.master.empty() ? t.param_value(i) : t.master[i];
    m[i] = reference_decode(codec, t.m, true, i);
    v[i] = reference_decode(codec, t.v, false, i);
    adamw_element(p, m[i], v[i], t.grad[i] * o.grad_scale, sc);
    if (!t.master.empty()) t.master[i] = p;
    if (!t.bf16) {
      t.param32[i] = p;
    } else if (!t.master.empty() || !o.stochastic_rounding) {
      t.param16[i] = static_cast<uint16_t>(precision::encode_scalar(p, formats::kBF16, Rounding::kNearestEven));
    } else {
      const uint32_t bits = precision::stochastic_bits(o.seed, philox_offset(step, kStreamParam), index_base + i, 16);
      t.param16[i] = static_cast<uint16_t>(
          precision::encode_scalar(p, formats::kBF16, Rounding::kStochastic, precision::RandomBits{bits, 16}));
    }
  }
  reference_encode(codec, m, true, o.seed, philox_offset(step, kStreamM), index_base, o.dre_clamp_k, t.m);
  reference_encode(codec, v, false, o.seed, philox_offset(step, kStreamV), index_base, o.dre_clamp_k, t.v);
  t.step = step;
}

TEST(FusedStep, EveryCodecEqualsTheScalarRulesBitForBit) {
  const AdamWHyper h{2e-3, 0.9, 0.999, 1e-8, 0.01};
  // Three chunks and a ragged tail (partial fp8 group and int8 block), a tensor under int8's 4096 minimum,
  // and an index base that does not fall on a Philox group boundary.
  for (const int64_t n : {int64_t{3 * 4096 + 300}, int64_t{1000}}) {
    for (StateCodec codec : kAllCodecs) {
      for (int param : {0, 1, 2}) {  // fp32; bfloat16 with an FP32 master; master-less bfloat16
        const bool bf16 = param > 0, master = param == 1;
        Tensor fused(n, codec, bf16, master, 21), ref(n, codec, bf16, master, 21);
        std::mt19937 rng(22);
        for (int step = 0; step < 4; ++step) {
          // Gradients of changing scale, with an all-zero fp8 group in step 1 (DRE's "no nonzero element").
          fused.new_gradient(rng, std::ldexp(1.0f, -4 * step));
          if (step == 1) std::fill(fused.grad.begin() + 128, fused.grad.begin() + 256, 0.0f);
          ref.grad = fused.grad;
          UpdateOptions o;
          o.seed = 1234 + step;
          o.grad_scale = step == 2 ? 0.5f : 1.0f;
          o.lr_factor = 0.75;
          o.dre_clamp_k = step == 3;
          o.stochastic_rounding = step != 2;
          TensorSlot s = fused.slot(77);
          adamw_update({&s, 1}, h, o);
          reference_adamw(ref, h, o, 77);
          const std::string what = state_codec_name(codec) + " n " + std::to_string(n) + " param kind " +
                                   std::to_string(param) + " step " + std::to_string(step);
          ASSERT_TRUE(fused.m == ref.m) << what;
          ASSERT_TRUE(fused.v == ref.v) << what;
          ASSERT_EQ(fused.param32, ref.param32) << what;
          ASSERT_EQ(fused.param16, ref.param16) << what;
          ASSERT_EQ(fused.master.size(), ref.master.size()) << what;
          if (!fused.master.empty()) {  // (memcmp of empty vectors would pass null pointers: UBSan reports it)
            ASSERT_EQ(std::memcmp(fused.master.data(), ref.master.data(), 4 * fused.master.size()), 0) << what;
          }
        }
      }
    }
  }
}

// The int8 code search (a vector search with permuted threshold tables on AVX-512) at and next to every
// threshold of both maps: the codes are dynamic_map_encode's, ties included.
TEST(EncodeState, Int8CodesAtEveryThresholdEqualTheScalarRule) {
  for (bool is_signed : {true, false}) {
    const DynamicMap& map = dynamic_map(is_signed);
    std::vector<float> x;
    for (int j = 0; j < 255; ++j)
      for (float t : {map.threshold[j], std::nextafter(map.threshold[j], -2.0f), std::nextafter(map.threshold[j], 2.0f)})
        x.push_back(t);
    x.push_back(1.0f);  // the block absmax: every other value is divided by 1 exactly
    const int64_t n = static_cast<int64_t>(x.size());
    // Every 256-block holds the absmax 1 first, so x / absmax is x; repeated past int8's 4096-element minimum
    // (below it the state stays FP32).
    std::vector<float> blocks;
    while (blocks.size() < static_cast<size_t>(kInt8MinElements))
      for (int64_t i = 0; i < n; ++i) {
        if (blocks.size() % kInt8BlockSize == 0) blocks.push_back(1.0f);
        blocks.push_back(x[i]);
      }
    const int64_t total = static_cast<int64_t>(blocks.size());
    const MomentLayout layout = moment_layout(StateCodec::kInt8, total);
    std::vector<uint8_t> codes(total);
    std::vector<float> absmax(layout.groups);
    encode_state(StateCodec::kInt8, blocks.data(), total, MomentView{codes.data(), absmax.data(), nullptr, nullptr},
                 is_signed);
    for (int64_t i = 0; i < total; ++i)
      ASSERT_EQ(codes[i], dynamic_map_encode(blocks[i], map.threshold)) << "element " << i << " x " << blocks[i];
  }
}


// fp8_plain with scale 1 decodes to the E4M3 values themselves: every code (the vector decode converts through
// FP16 and special-cases NaN) equals decode_scalar bit for bit, in and out of 16-element vectors.
TEST(DecodeState, EveryE4m3CodeEqualsDecodeScalar) {
  const int64_t n = 256 + 7;  // a ragged tail after 16 full vectors
  std::vector<uint8_t> codes(n);
  for (int64_t i = 0; i < n; ++i) codes[i] = static_cast<uint8_t>(i * 37 % 256);
  const MomentLayout layout = moment_layout(StateCodec::kFP8Plain, n);
  std::vector<float> scale(layout.groups, 1.0f), out(n);
  decode_state(StateCodec::kFP8Plain, MomentView{codes.data(), scale.data(), nullptr, nullptr}, n, true, out.data());
  for (int64_t i = 0; i < n; ++i)
    ASSERT_EQ(precision::float_bits(out[i]), precision::float_bits(precision::decode_scalar(codes[i], formats::kE4M3)))
        << "code " << int{codes[i]};
}

// int8 decode (a permute tree on AVX-512) equals the map's values times the block absmax for every code.
TEST(DecodeState, EveryInt8CodeEqualsTheMapValue) {
  const int64_t n = kInt8MinElements + 77;
  for (bool is_signed : {true, false}) {
    std::vector<uint8_t> codes(n);
    for (int64_t i = 0; i < n; ++i) codes[i] = static_cast<uint8_t>(i * 91 % 256);
    const MomentLayout layout = moment_layout(StateCodec::kInt8, n);
    std::vector<float> absmax(layout.groups), out(n);
    for (size_t b = 0; b < absmax.size(); ++b) absmax[b] = std::ldexp(1.0f, static_cast<int>(b % 9) - 4) * 1.37f;
    decode_state(StateCodec::kInt8, MomentView{codes.data(), absmax.data(), nullptr, nullptr}, n, is_signed,
                 out.data());
    for (int64_t i = 0; i < n; ++i)
      ASSERT_EQ(out[i], dynamic_map(is_signed).value[codes[i]] * absmax[i / kInt8BlockSize]) << "element " << i;
  }
}


// fp8 (DRE) encode and decode outside a step against dre_group / dre_encode / dre_decode, on groups chosen for
// the vector paths' edges: spans of nearly FP32's whole range (subnormal |x| / centre: the exact-division
// fallback), tiny groups whose expanded values underflow, narrow and constant groups, zeros, mixed signs.
TEST(EncodeState, Fp8GroupsAtTheEdgesEqualTheScalarRules) {
  std::mt19937 rng(31);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  std::vector<float> x;
  auto group = [&](float lo_exp, float hi_exp, bool zeros) {
    for (int j = 0; j < kDreGroupSize; ++j) {
      const float e = lo_exp + (hi_exp - lo_exp) * (0.5f + 0.5f * unit(rng));
      float v = std::exp2(e) * (unit(rng) < 0 ? -1.0f : 1.0f);
      if (zeros && j % 5 == 0) v = 0.0f;
      x.push_back(v);
    }
  };
  group(-149.0f, 127.0f, true);   // subnormal to near FLT_MAX
  group(-140.0f, 60.0f, false);
  group(-130.0f, -100.0f, false);  // all tiny
  group(-10.0f, -9.99f, false);    // narrow: k at its cap
  group(-3.0f, 3.0f, true);
  group(0.0f, 0.0f, false);        // constant magnitude
  for (int j = 0; j < kDreGroupSize; ++j) x.push_back(0.0f);  // all zero
  group(-20.0f, 0.0f, false);
  for (bool clamp : {false, true}) {
    const int64_t n = static_cast<int64_t>(x.size()) - 37;  // a ragged last group
    const MomentLayout layout = moment_layout(StateCodec::kFP8, n);
    std::vector<uint8_t> codes(n);
    std::vector<float> scale(layout.groups), k(layout.groups), centre(layout.groups), back(n);
    const MomentView view{codes.data(), scale.data(), k.data(), centre.data()};
    encode_state(StateCodec::kFP8, x.data(), n, view, true, 0, 0, 0, clamp);
    decode_state(StateCodec::kFP8, view, n, true, back.data());
    for (int64_t g0 = 0; g0 < n; g0 += kDreGroupSize) {
      const int64_t end = std::min(n, g0 + kDreGroupSize);
      float max_abs = 0.0f, min_nonzero = FLT_MAX;
      for (int64_t i = g0; i < end; ++i) {
        max_abs = std::max(max_abs, std::fabs(x[i]));
        if (x[i] != 0.0f) min_nonzero = std::min(min_nonzero, std::fabs(x[i]));
      }
      const DreGroup grp = dre_group(max_abs, min_nonzero, clamp);
      const int64_t g = g0 / kDreGroupSize;
      ASSERT_EQ(scale[g], grp.scale) << "group " << g;
      ASSERT_EQ(k[g], grp.expansion) << "group " << g;
      ASSERT_EQ(centre[g], grp.centre) << "group " << g;
      for (int64_t i = g0; i < end; ++i) {
        ASSERT_EQ(codes[i], dre_encode(x[i], grp)) << "element " << i << " x " << x[i];
        const float expect = dre_decode(precision::decode_scalar(codes[i], formats::kE4M3), grp);
        ASSERT_EQ(precision::float_bits(back[i]), precision::float_bits(expect)) << "element " << i;
      }
    }
  }
}

}  // namespace
}  // namespace nibble::optim
