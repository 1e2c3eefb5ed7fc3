// The BPE merges file (core/data/bpe_tokenizer.h BpeTokenizer::load): "#" header, then "left right" per line.
// An accepted file must also encode and decode a text without failing.
#include "core/data/bpe_tokenizer.h"
#include "fuzz/fuzz_harness.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = nibble::fuzz::write_file("bpe_merges.txt", data, size);
  return nibble::fuzz::expect_accept_or_nibble_error([&] {
    const auto bpe = nibble::core::data::BpeTokenizer::load(path);
    const auto ids = bpe.encode("In the beginning God created the heaven and the earth. 1611\n");
    std::vector<int64_t> wide(ids.begin(), ids.end());
    (void)bpe.decode(wide);
  });
}
