// A token file's meta.json (core/data/tokenizer.h Tokenizer::for_token_file): which tokenizer made the tokens,
// its merges file and vocabulary. The scratch directory holds a valid merges file beside it (3 merges), so
// inputs that name it reach the vocabulary check.
#include "core/data/tokenizer.h"
#include "fuzz/fuzz_harness.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool merges_written = [] {
    const std::string merges = "# nibble BPE merges\n116 104\n256 101\n32 116\n";
    nibble::fuzz::write_file("bpe_merges.txt", reinterpret_cast<const uint8_t*>(merges.data()), merges.size());
    return true;
  }();
  (void)merges_written;
  nibble::fuzz::write_file("meta.json", data, size);
  const std::string tokens = (nibble::fuzz::scratch_dir() / "train.bin").string();
  return nibble::fuzz::expect_accept_or_nibble_error([&] {
    const auto tok = nibble::core::data::Tokenizer::for_token_file(tokens);
    (void)tok.decode({1, 2, 300, -1});
    (void)tok.encode("the earth");
  });
}
