// core::contains_nan (the input checks' NaN scan) against torch's isnan(t).any(): every position of a NaN in
// float32 and bfloat16 tensors around the scan's 1024-element blocks, infinities and signalling NaNs, and the
// torch fallback for non-contiguous tensors.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <limits>

#include "core/nan_check.h"

namespace nibble::core {
namespace {

TEST(NanCheck, AgreesWithTorchForEveryPosition) {
  for (auto dtype : {torch::kFloat32, torch::kBFloat16})
    for (int64_t n : {1, 15, 1023, 1024, 1025, 3000}) {
      const torch::Tensor clean = torch::randn({n}).to(dtype);
      EXPECT_FALSE(contains_nan(clean));
      for (int64_t at : {int64_t{0}, n / 2, n - 1}) {
        torch::Tensor t = clean.clone();
        t[at] = std::numeric_limits<float>::quiet_NaN();
        ASSERT_TRUE(torch::isnan(t).any().item<bool>());
        EXPECT_TRUE(contains_nan(t)) << c10::toString(dtype) << " n=" << n << " at " << at;
      }
    }
}

TEST(NanCheck, InfinitiesAreNotNanButEveryNanPatternIs) {
  torch::Tensor f = torch::zeros({40});
  f[3] = std::numeric_limits<float>::infinity();
  f[7] = -std::numeric_limits<float>::infinity();
  EXPECT_FALSE(contains_nan(f));
  EXPECT_FALSE(contains_nan(f.to(torch::kBFloat16)));
  // A signalling NaN and a negative NaN, written as bits.
  for (uint32_t bits : {0x7F800001u, 0xFFC00000u}) {
    torch::Tensor g = torch::zeros({40});
    std::memcpy(g.data_ptr<float>() + 11, &bits, 4);
    EXPECT_TRUE(contains_nan(g));
  }
  for (uint16_t bits : {uint16_t{0x7F81}, uint16_t{0xFFC0}}) {
    torch::Tensor h = torch::zeros({40}, torch::kBFloat16);
    std::memcpy(reinterpret_cast<uint16_t*>(h.data_ptr()) + 11, &bits, 2);
    EXPECT_TRUE(contains_nan(h));
  }
}

TEST(NanCheck, NonContiguousAndOtherDtypesGoThroughTorch) {
  torch::Tensor t = torch::zeros({8, 8});
  t[5][2] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(contains_nan(t.t()));
  EXPECT_FALSE(contains_nan(t.t().narrow(1, 0, 5)));
  EXPECT_TRUE(contains_nan(t.to(torch::kFloat64)));
  EXPECT_FALSE(contains_nan(torch::zeros({4}, torch::kFloat16)));
}

}  // namespace
}  // namespace nibble::core
