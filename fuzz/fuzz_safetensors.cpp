// A safetensors file as nibble reads checkpoint shards (core/checkpoint/safetensors.h read_safetensors): the
// 8-byte header length, the JSON header (dtypes, shapes, data offsets, metadata) and the data it points into.
#include "core/checkpoint/safetensors.h"
#include "fuzz/fuzz_harness.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = nibble::fuzz::write_file("shard.safetensors", data, size);
  return nibble::fuzz::expect_accept_or_nibble_error([&] {
    const auto file = nibble::core::checkpoint::read_safetensors(path);
    for (const auto& [name, t] : file.tensors) (void)t.sum();  // every accepted tensor's bytes are readable
  });
}
