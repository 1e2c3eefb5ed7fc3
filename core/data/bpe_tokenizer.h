#pragma once
// Byte-level BPE trained by nibble on the corpus (the option to the byte tokenizer, byte_tokenizer.h).
// Ids 0-255 are the bytes; merge i creates id 256 + i from a pair of existing ids.
//
// Pre-tokenization (merges never cross a chunk boundary; tests/python/test_bpe_tokenizer.py re-implements
// exactly this): the text is cut left to right into chunks, each either
//   - an optional single space (0x20) followed by a maximal run of ASCII letters [A-Za-z],
//   - an optional single space followed by a maximal run of ASCII digits [0-9], or
//   - any other single byte (newline, punctuation, a space not followed by a letter or digit, bytes >= 0x80).
// Training counts the distinct chunks, then repeatedly merges the most frequent adjacent pair of ids (counts
// weighted by chunk frequency; ties broken by the smallest (left, right)), replacing its non-overlapping
// occurrences left to right, until the vocabulary is full or no pair occurs twice. Encoding applies, within
// each chunk, the lowest-ranked merge present (all its non-overlapping occurrences, left to right) until none
// applies -- the order training made them in.
#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace nibble::core::data {

// The chunks of `text` (pre-tokenization above), as [begin, end) byte offsets.
std::vector<std::pair<size_t, size_t>> bpe_chunks(const std::string& text);

class BpeTokenizer {
 public:
  // Trains on `text` up to `vocab` ids (257 .. 65536: token files hold uint16). Throws InvalidArgument for a
  // vocabulary outside that range.
  static BpeTokenizer train(const std::string& text, int64_t vocab);
  // The merges file: a "#" header line, then one "left right" pair of ids per line in rank order.
  static BpeTokenizer load(const std::string& path);  // throws InvalidArgument naming the path and line
  void save(const std::string& path) const;

  std::vector<uint16_t> encode(const std::string& text) const;
  // Ids outside the vocabulary become '?'.
  std::string decode(const std::vector<int64_t>& ids) const;
  int64_t vocab() const { return 256 + static_cast<int64_t>(merges_.size()); }
  const std::vector<std::pair<int32_t, int32_t>>& merges() const { return merges_; }

 private:
  explicit BpeTokenizer(std::vector<std::pair<int32_t, int32_t>> merges);
  std::vector<int32_t> encode_chunk(const std::string& chunk) const;

  std::vector<std::pair<int32_t, int32_t>> merges_;
  std::unordered_map<uint64_t, int32_t> rank_;  // (left << 32 | right) -> merge index
  std::vector<std::string> bytes_;              // id -> the bytes it stands for
};

}  // namespace nibble::core::data
