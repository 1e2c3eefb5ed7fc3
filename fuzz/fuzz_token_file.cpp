// A token file (core/data/token_file.h TokenFile): uint16 ids, memory-mapped. Any size is tried; an accepted
// file's ids are all read.
#include "core/data/token_file.h"
#include "fuzz/fuzz_harness.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = nibble::fuzz::write_file("tokens.bin", data, size);
  return nibble::fuzz::expect_accept_or_nibble_error([&] {
    const nibble::core::data::TokenFile f(path);
    uint64_t sum = 0;
    for (int64_t i = 0; i < f.size(); ++i) sum += f.data()[i];
    (void)sum;
  });
}
