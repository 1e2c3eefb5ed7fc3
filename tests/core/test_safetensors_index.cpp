// Range reads of a safetensors file (core/checkpoint/safetensors_index.h) against the whole-file reader: every
// tensor and every narrow of it along every dim, bit for bit, reading only the bytes of the range; malformed
// files refused with the whole-file reader's message.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/checkpoint/safetensors.h"
#include "core/checkpoint/safetensors_index.h"
#include "precision/error.h"

namespace ck = nibble::core::checkpoint;

namespace {

std::string temp_file(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("nibble_test_" + std::to_string(::getpid()) + "_" + name)).string();
}

std::vector<std::pair<std::string, torch::Tensor>> sample_tensors() {
  torch::manual_seed(7);
  return {
      {"model.w", torch::randn({6, 10})},
      {"optim.w.m", torch::randint(0, 255, {4, 3, 5}, torch::kUInt8)},
      {"scalar", torch::tensor(int64_t{42})},
      {"bf16", torch::randn({8, 4}).to(torch::kBFloat16)},
      {"empty", torch::empty({0, 3})},
  };
}

}  // namespace

TEST(SafetensorsIndex, ReadsEveryTensorAndEveryRangeBitForBit) {
  const std::string path = temp_file("ranges.safetensors");
  ck::write_safetensors(path, sample_tensors(), {{"format", "x"}});
  const ck::SafetensorsFile whole = ck::read_safetensors(path);
  const ck::SafetensorsIndex index(path);
  EXPECT_EQ(index.metadata(), whole.metadata);
  ASSERT_EQ(index.entries().size(), whole.tensors.size());
  const auto written = sample_tensors();
  for (size_t i = 0; i < written.size(); ++i) EXPECT_EQ(index.entries()[i].name, written[i].first);  // file order
  for (const auto& [name, t] : whole.tensors) {
    const torch::Tensor got = index.read(name);
    EXPECT_EQ(got.scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(torch::equal(got, t)) << name;
    for (int64_t dim = 0; dim < t.dim(); ++dim)
      for (int64_t start = 0; start < t.size(dim); ++start)
        for (int64_t len = 0; start + len <= t.size(dim); ++len) {
          const torch::Tensor part = index.read_narrow(name, dim, start, len);
          EXPECT_TRUE(part.is_contiguous());
          EXPECT_TRUE(torch::equal(part, t.narrow(dim, start, len))) << name << " dim " << dim << " [" << start << ", "
                                                                    << start + len << ")";
        }
  }
  std::filesystem::remove(path);
}

TEST(SafetensorsIndex, ReadsOnlyTheBytesOfTheRange) {
  const std::string path = temp_file("bytes.safetensors");
  ck::write_safetensors(path, {{"a", torch::zeros({100, 8})}, {"b", torch::ones({50, 4})}});
  const ck::SafetensorsIndex index(path);
  EXPECT_EQ(index.bytes_read(), 0u);  // the header is not counted
  EXPECT_EQ(index.data_bytes(), (100u * 8 + 50 * 4) * 4);
  index.read_narrow("a", 0, 10, 5);  // 5 rows of 8 floats
  EXPECT_EQ(index.bytes_read(), 5u * 8 * 4);
  index.read_narrow("a", 1, 2, 3);  // 3 of 8 columns in each of 100 rows
  EXPECT_EQ(index.bytes_read(), 5u * 8 * 4 + 100 * 3 * 4);
  index.read("b");
  EXPECT_EQ(index.bytes_read(), 5u * 8 * 4 + 100 * 3 * 4 + 50 * 4 * 4);
  std::filesystem::remove(path);
}

TEST(SafetensorsIndex, RefusesWhatTheWholeFileReaderRefusesWithItsMessage) {
  const std::string path = temp_file("bad.safetensors");
  ck::write_safetensors(path, {{"a", torch::zeros({4, 4})}});
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 8);  // truncated data
  std::string whole_message, index_message;
  try {
    ck::read_safetensors(path);
  } catch (const nibble::Error& e) {
    whole_message = e.what();
  }
  try {
    ck::SafetensorsIndex index(path);
  } catch (const nibble::Error& e) {
    index_message = e.what();
  }
  EXPECT_NE(whole_message.find("data offsets outside"), std::string::npos) << whole_message;
  EXPECT_EQ(index_message, whole_message);
  std::filesystem::remove(path);
}

TEST(SafetensorsIndex, NamesTheTensorAndRangeItCannotRead) {
  const std::string path = temp_file("names.safetensors");
  ck::write_safetensors(path, {{"a", torch::zeros({4, 4})}});
  const ck::SafetensorsIndex index(path);
  EXPECT_FALSE(index.contains("b"));
  try {
    index.read("b");
    FAIL() << "no throw";
  } catch (const nibble::Error& e) {
    EXPECT_NE(std::string(e.what()).find("holds no tensor 'b'"), std::string::npos) << e.what();
  }
  try {
    index.read_narrow("a", 1, 3, 2);
    FAIL() << "no throw";
  } catch (const nibble::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("has no range [3, 5) along dim 1"), std::string::npos) << e.what();
  }
  std::filesystem::remove(path);
}
