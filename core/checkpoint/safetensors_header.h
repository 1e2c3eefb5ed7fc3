#pragma once
// The JSON header of a safetensors file (safetensors.h), parsed and checked on its own: what the whole-file
// reader and the range reader (safetensors_index.h) share, so both refuse the same malformed files with the
// same messages. Every field is checked before it is used, and each tensor's shape against its data offsets
// and the data size, before anything is allocated (fuzz/fuzz_safetensors.cpp).
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace nibble::core::checkpoint {

struct SafetensorsEntry {
  std::string name;
  torch::ScalarType dtype = torch::kFloat32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets into the data section (after the header)
};

struct SafetensorsHeader {
  std::vector<SafetensorsEntry> entries;  // in data offset order: the order the writer was given the tensors
  std::map<std::string, std::string> metadata;
};

// `text`: the header's JSON; `data_size`: the bytes after it. Throws nibble::Error naming `path` for a malformed
// header, an unknown dtype, or offsets outside the data or not matching the shape and dtype.
SafetensorsHeader parse_safetensors_header(const std::string& text, uint64_t data_size, const std::string& path);

// Checks the header length `n` (the file's first 8 bytes, little-endian) against the file size; `readable`:
// whether those 8 bytes could be read at all. Throws nibble::Error naming `path` for a truncated file.
void check_safetensors_header_length(bool readable, uint64_t n, uint64_t file_size, const std::string& path);

torch::ScalarType parse_safetensors_dtype(const std::string& name, const std::string& path);

}  // namespace nibble::core::checkpoint
