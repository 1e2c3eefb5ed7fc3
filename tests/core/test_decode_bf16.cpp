// The GEMM's operand decode (core/cpu/decode_bf16.h) against its scalar rule, bit for bit: the build's own
// path (AVX-512 VBMI lanes here) and the Highway lanes on every Highway target this CPU runs, forced one at a
// time as in test_gemm_bf16's HwyAgreesBitForBitOnEveryTarget. Codes cover every byte (NaN and Inf codes
// included), folds include 0, Inf, NaN and ones that make the products FP32 subnormals; tables: E4M3, E5M2
// (the lanes' multiply-add rule), E2M1 (4-bit lookups) and random values (the gather path).
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/cpu/decode_bf16.h"
#include "precision/cpu/simd_targets.h"
#include "precision/format.h"

namespace nibble::core::cpu {
namespace {

namespace formats = precision::formats;

// A format's tables, or (format null) a table of 256 random BF16 values, which has no multiply-add rule: the
// Highway lanes' gather path.
CodeTables tables_of(const precision::Format* f) {
  const int count = f && f->bits() <= 4 ? 16 : 256;
  std::vector<float> values(static_cast<size_t>(count));
  std::mt19937 gen(3);
  for (int c = 0; c < count; ++c)
    values[static_cast<size_t>(c)] = f ? precision::decode_scalar(static_cast<uint32_t>(c), *f)
                                       : std::bit_cast<float>(static_cast<uint32_t>(gen()) & 0xBFFF0000u);  // finite
  CodeTables t;
  t.fill(values.data(), count);
  return t;
}

// Runs `check(run, what)` over runs of several lengths (multiples of 32, one past the VBMI lanes' 64), with and
// without folds.
template <class Check>
void on_runs(const CodeTables& tables, bool fp4, Check check) {
  std::mt19937 gen(7);
  std::vector<uint8_t> data(4096 + 64);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i < 512 ? i : gen());  // every byte
  std::vector<float> folds(4096 / 16 + 4);
  for (size_t g = 0; g < folds.size(); ++g) {
    const float special[] = {0.0f, INFINITY, NAN, std::ldexp(1.0f, -140), std::ldexp(1.0f, -126), 448.0f, 0.0625f};
    folds[g] = g < 7 ? special[g]
                     : (fp4 ? precision::decode_scalar(1 + gen() % 126, formats::kE4M3)  // NVFP4's E4M3 scales
                            : std::ldexp(1.0f, static_cast<int>(gen() % 41) - 20));
  }
  for (int64_t n : {32, 64, 96, 256, 1024, 4096})
    for (bool folded : {false, true}) {
      const DecodeRun run{&tables, fp4, data.data() + (n == 96 ? 3 : 0), n, folded ? folds.data() : nullptr};
      check(run, "n " + std::to_string(n) + (folded ? " folded" : ""));
      if (::testing::Test::HasFatalFailure()) return;
    }
}

void expect_same(const std::vector<uint16_t>& want, const std::vector<uint16_t>& got, const std::string& what) {
  for (size_t i = 0; i < want.size(); ++i)
    ASSERT_EQ(want[i], got[i]) << what << " element " << i;
}

struct Case {
  const char* name;
  const precision::Format* format;  // null: random values
  bool fp4;
};
const Case kCases[] = {{"E4M3", &formats::kE4M3, false},
                       {"E5M2", &formats::kE5M2, false},
                       {"E2M1", &formats::kE2M1, true},
                       {"random table", nullptr, false}};

// The FP8 formats' tables have the multiply-add rule (their lanes do not fall back to gathers); a random table
// has not.
TEST(DecodeBf16, Fp8TablesHaveTheRule) {
  EXPECT_TRUE(tables_of(&formats::kE4M3).rule8);
  EXPECT_TRUE(tables_of(&formats::kE5M2).rule8);
  EXPECT_FALSE(tables_of(nullptr).rule8);
}

TEST(DecodeBf16, BuildPathEqualsScalar) {
  for (const Case& c : kCases) {
    const CodeTables tables = tables_of(c.format);
    on_runs(tables, c.fp4, [&](const DecodeRun& run, const std::string& what) {
      std::vector<uint16_t> want(static_cast<size_t>(run.n)), got(static_cast<size_t>(run.n) + 1, 0xABCD);
      decode_bf16_scalar(run, want.data());
      decode_bf16(run, got.data());
      EXPECT_EQ(got.back(), 0xABCD) << "wrote past the run";
      got.pop_back();
      expect_same(want, got, std::string(c.name) + " " + what);
    });
  }
}

#if NIBBLE_HAVE_DECODE_BF16_HWY
TEST(DecodeBf16, HwyAgreesBitForBitOnEveryTarget) {
  const std::vector<int64_t> targets = precision::simd::runnable_targets();
  EXPECT_GE(targets.size(), 2u);
  for (const Case& c : kCases) {
    const CodeTables tables = tables_of(c.format);
    on_runs(tables, c.fp4, [&](const DecodeRun& run, const std::string& what) {
      std::vector<uint16_t> want(static_cast<size_t>(run.n));
      decode_bf16_scalar(run, want.data());
      for (const int64_t target : targets) {
        precision::simd::force_target(target);
        ASSERT_EQ(precision::simd::current_target(), target);
        std::vector<uint16_t> got(static_cast<size_t>(run.n) + 1, 0xABCD);
        decode_bf16_hwy(run, got.data());
        precision::simd::force_target(0);
        EXPECT_EQ(got.back(), 0xABCD) << "wrote past the run";
        got.pop_back();
        expect_same(want, got, std::string(c.name) + " " + what + " on " + precision::simd::target_name(target));
      }
    });
  }
}
#endif

}  // namespace
}  // namespace nibble::core::cpu
