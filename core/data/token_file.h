#pragma once
// Token files: raw little-endian uint16 ids (nanoGPT/llm.c style, no header), memory-mapped read-only so
// every rank shares the page cache. `prepare_corpus` writes <dir>/train.bin, <dir>/val.bin and
// <dir>/meta.json (tokenizer, vocabulary, token counts, source).
#include <cstdint>
#include <optional>
#include <string>

namespace nibble::core::data {

struct PreparedCorpus {
  std::string train_path, val_path, meta_path;
  int64_t train_tokens = 0, val_tokens = 0;
  int64_t vocab = 0;  // ids the tokenizer makes (BPE: fewer than asked when no pair occurred twice any more)
};

// Tokenizes `text_path`; the last `val_fraction` of the text (in bytes) is the held-out split. tokenizer
// "byte" (vocab must be unset), or "bpe": a BpeTokenizer of up to `vocab` ids (unset: 1024) trained on the
// training part only, its merges written to <dir>/bpe_merges.txt. Throws InvalidArgument for an unreadable/empty file, a
// fraction outside (0, 0.5], an unknown tokenizer or a vocabulary out of range.
PreparedCorpus prepare_corpus(const std::string& text_path, const std::string& out_dir, double val_fraction,
                              const std::string& tokenizer = "byte",
                              std::optional<int64_t> vocab = std::nullopt);

class TokenFile {
 public:
  explicit TokenFile(const std::string& path);  // throws InvalidArgument naming the path on any failure
  ~TokenFile();
  TokenFile(const TokenFile&) = delete;
  TokenFile& operator=(const TokenFile&) = delete;

  int64_t size() const { return count_; }
  const uint16_t* data() const { return data_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint16_t* data_ = nullptr;
  int64_t count_ = 0;
  size_t bytes_ = 0;
};

}  // namespace nibble::core::data
