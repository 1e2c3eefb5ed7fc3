// Parameters initialised shard by shard (core/model/sharded_init.h) against what the GPT did before: the full
// tensor drawn with at::normal from torch's CPU generator, then sliced. Bit for bit for every shard of every
// split, across the shapes that exercise at::normal's paths: a multiple of 16 elements, a redrawn last 16, under
// 16 elements, chunks larger than the drawing chunk, and 3-D tensors.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "core/model/sharded_init.h"
#include "precision/error.h"

namespace {

torch::Tensor today(uint64_t seed, double std, const std::vector<int64_t>& shape, int dim, int64_t parts,
                    int64_t index) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  torch::Tensor full = at::normal(0.0, std, shape, gen, torch::TensorOptions().dtype(torch::kFloat32));
  if (dim < 0) return full;
  const int64_t part = shape[static_cast<size_t>(dim)] / parts;
  return full.narrow(dim, index * part, part).contiguous();
}

}  // namespace

TEST(ShardedInit, EveryShardEqualsTheSlicedFullTensorBitForBit) {
  struct Case {
    std::vector<int64_t> shape;
    int dim;
    int64_t parts;
  };
  const std::vector<Case> cases = {
      {{64, 48}, 0, 2},   {{64, 48}, 1, 4},     {{37, 24}, 0, 1},     {{36, 25}, 0, 4},  {{36, 25}, 1, 5},
      {{6, 2}, 0, 2},     {{3, 5}, 1, 5},       {{300, 1030}, 1, 2},  {{300, 1030}, 0, 3}, {{7, 6, 9}, 1, 3},
      {{7, 6, 9}, 2, 3},  {{70001, 1}, 0, 1},   {{24, 4097}, 0, 8},   {{96}, 0, 4},      {{100}, 0, 4},
  };
  for (const Case& c : cases)
    for (int64_t i = 0; i < c.parts; ++i) {
      const torch::Tensor got = nibble::core::model::sharded_normal(1234 + i, 0.02, c.shape, c.dim, c.parts, i);
      const torch::Tensor want = today(1234 + i, 0.02, c.shape, c.dim, c.parts, i);
      ASSERT_EQ(got.sizes(), want.sizes());
      EXPECT_TRUE(got.is_contiguous());
      EXPECT_TRUE(torch::equal(got, want)) << c10::str(c10::IntArrayRef(c.shape)) << " dim " << c.dim << " shard "
                                           << i << " of " << c.parts;
    }
  // Replicated (dim < 0): the whole tensor.
  EXPECT_TRUE(torch::equal(nibble::core::model::sharded_normal(5, 1.0, {33, 17}, -1, 1, 0), today(5, 1.0, {33, 17}, -1, 1, 0)));
}

TEST(ShardedInit, RefusesASplitThatDoesNotDivide) {
  try {
    nibble::core::model::sharded_normal(1, 0.02, {30, 10}, 0, 4, 0);
    FAIL() << "no throw";
  } catch (const nibble::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("the parts must divide the dim"), std::string::npos) << e.what();
  }
}
