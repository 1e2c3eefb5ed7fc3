#pragma once
// CRC-32 (IEEE 802.3, the zlib/PNG polynomial 0xEDB88320), computed by zlib, of a file: what a checkpoint
// manifest records per shard so a corrupted or truncated shard is detected before it is loaded.
#include <cstdint>
#include <string>

namespace nibble::core::checkpoint {

uint32_t crc32_update(uint32_t crc, const void* data, size_t bytes);  // start with crc = 0
// Throws nibble::Error naming the path when it cannot be read.
uint32_t crc32_file(const std::string& path);

}  // namespace nibble::core::checkpoint
