#pragma once
// Which tokenizer made a set of token files: meta.json beside them says "byte" (or is absent: byte) or "bpe"
// with its merges file. The trainer uses it to encode the sample prompt, decode samples and check that the
// model's vocabulary covers the ids.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/data/bpe_tokenizer.h"

namespace nibble::core::data {

class Tokenizer {
 public:
  // Throws InvalidArgument naming meta.json or the merges file when they are unreadable or inconsistent.
  static Tokenizer for_token_file(const std::string& token_file_path);
  static Tokenizer bytes() { return Tokenizer(nullptr); }

  std::vector<uint16_t> encode(const std::string& text) const;
  std::string decode(const std::vector<int64_t>& ids) const;
  int64_t vocab() const;
  std::string name() const { return bpe_ ? "bpe" : "byte"; }

 private:
  explicit Tokenizer(std::shared_ptr<const BpeTokenizer> bpe) : bpe_(std::move(bpe)) {}
  std::shared_ptr<const BpeTokenizer> bpe_;  // null: bytes
};

}  // namespace nibble::core::data
