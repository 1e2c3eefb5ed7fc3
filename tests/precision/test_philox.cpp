// Philox4x32-10 against the published known-answer vectors of Random123 (kat_vectors, "philox4x32 10").
#include <gtest/gtest.h>

#include "precision/philox.h"

namespace nibble::precision {
namespace {

struct Kat {
  uint32_t counter[4];
  uint32_t key[2];
  uint32_t expected[4];
};

TEST(Philox, KnownAnswerVectors) {
  const Kat kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
       {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (const Kat& kat : kats) {
    const Philox4x32Output out = philox4x32_10(kat.counter, kat.key);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(out.v[i], kat.expected[i]) << "word " << i;
  }
}

TEST(Philox, BlockKeyingSplitsSeedOffsetAndSubsequence) {
  // philox_block(seed, offset, subsequence) is philox4x32_10 with key = seed and counter = (offset, subseq).
  const uint64_t seed = 0x299f31d0a4093822ull, offset = 0x85a308d3243f6a88ull, subsequence = 0x0370734413198a2eull;
  const Philox4x32Output out = philox_block(seed, offset, subsequence);
  EXPECT_EQ(out.v[0], 0xd16cfe09u);
  EXPECT_EQ(out.v[3], 0x24126ea1u);
}

}  // namespace
}  // namespace nibble::precision
