#pragma once
// The default tokenizer: one token per byte (vocabulary 256). Lossless for any text, no training needed.
#include <cstdint>
#include <string>
#include <vector>

namespace nibble::core::data {

inline constexpr int64_t kByteVocab = 256;

inline std::vector<uint16_t> byte_encode(const std::string& text) {
  return std::vector<uint16_t>(reinterpret_cast<const unsigned char*>(text.data()),
                               reinterpret_cast<const unsigned char*>(text.data()) + text.size());
}

// Ids >= 256 (a model with a larger vocabulary can sample them) become '?'.
inline std::string byte_decode(const std::vector<int64_t>& ids) {
  std::string out;
  out.reserve(ids.size());
  for (int64_t id : ids) out.push_back(id >= 0 && id < kByteVocab ? static_cast<char>(id) : '?');
  return out;
}

}  // namespace nibble::core::data
