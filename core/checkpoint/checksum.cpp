#include "core/checkpoint/checksum.h"

#include <zlib.h>

#include <algorithm>
#include <fstream>
#include <limits>
#include <vector>

#include "precision/error.h"

namespace nibble::core::checkpoint {

uint32_t crc32_update(uint32_t crc, const void* data, size_t bytes) {
  // zlib's crc32 (slice-by-8 tables) computes the same IEEE 802.3 CRC the manifests of older checkpoints hold; it
  // takes a uInt length, so very large buffers go in pieces.
  const auto* p = static_cast<const Bytef*>(data);
  uLong c = crc;
  while (bytes > 0) {
    const uInt n = static_cast<uInt>(std::min<size_t>(bytes, std::numeric_limits<uInt>::max()));
    c = ::crc32(c, p, n);
    p += n;
    bytes -= n;
  }
  return static_cast<uint32_t>(c);
}

uint32_t crc32_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("checksum: cannot read '" + path + "'");
  std::vector<char> buf(1 << 20);
  uint32_t crc = 0;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    crc = crc32_update(crc, buf.data(), static_cast<size_t>(in.gcount()));
  }
  return crc;
}

}  // namespace nibble::core::checkpoint
