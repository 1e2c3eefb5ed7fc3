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
#include "optim/dynamic_map.h"
#include "optim/fused_step.h"
#include "optim/grad_check.h"
#include "optim/serialize.h"
#include "precision/convert.h"
#include "precision/error.h"

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

}  // namespace
}  // namespace nibble::optim
