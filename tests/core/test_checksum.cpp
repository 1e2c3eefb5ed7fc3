// The checkpoint checksum (core/checkpoint/checksum.h, zlib's crc32) against the CRC-32 standard's check value
// and a bit-at-a-time CRC written from the polynomial's definition: checkpoints written with the table
// implementation nibble used before zlib hold the same numbers, so they still load.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "core/checkpoint/checksum.h"
#include "precision/error.h"

namespace nibble::core::checkpoint {
namespace {

uint32_t bitwise_crc32(const std::vector<unsigned char>& data) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char byte : data) {
    c ^= byte;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
  }
  return ~c;
}

TEST(Checksum, StandardCheckValue) {
  const std::string s = "123456789";
  EXPECT_EQ(crc32_update(0, s.data(), s.size()), 0xCBF43926u);
  EXPECT_EQ(crc32_update(0, s.data(), 0), 0u);
}

TEST(Checksum, EqualsTheDefinitionAndChainsOverPieces) {
  std::mt19937 gen(7);
  for (size_t n : {1u, 3u, 64u, 1000u, 65537u}) {
    std::vector<unsigned char> data(n);
    for (auto& b : data) b = static_cast<unsigned char>(gen());
    const uint32_t whole = crc32_update(0, data.data(), n);
    EXPECT_EQ(whole, bitwise_crc32(data)) << n << " bytes";
    const size_t cut = n / 3;
    EXPECT_EQ(crc32_update(crc32_update(0, data.data(), cut), data.data() + cut, n - cut), whole) << n << " bytes";
  }
}

TEST(Checksum, FileAndMissingFile) {
  const auto path = std::filesystem::temp_directory_path() / "nibble_test_checksum.bin";
  std::vector<unsigned char> data(3 << 20);  // spans several of crc32_file's 1 MiB reads
  std::mt19937 gen(11);
  for (auto& b : data) b = static_cast<unsigned char>(gen());
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
  EXPECT_EQ(crc32_file(path.string()), bitwise_crc32(data));
  std::filesystem::remove(path);
  EXPECT_THROW(crc32_file(path.string()), Error);
}

}  // namespace
}  // namespace nibble::core::checkpoint
