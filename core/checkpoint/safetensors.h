#pragma once
// The safetensors format (huggingface/safetensors), written from its specification: an 8-byte little-endian
// header length N, N bytes of JSON {"<name>": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
// "__metadata__": {string: string}} (padded with spaces to a multiple of 8), then the tensors' raw bytes,
// row-major little-endian, offsets relative to the end of the header. Any safetensors reader can open a
// nibble checkpoint shard.
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace nibble::core::checkpoint {

struct SafetensorsFile {
  std::map<std::string, torch::Tensor> tensors;
  std::map<std::string, std::string> metadata;
};

// Writes `path` (not atomically: the checkpoint writer renames a whole directory). Tensors are made contiguous
// CPU copies. Names must be unique and not "__metadata__". Throws nibble::Error when the file cannot be written.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Reads the whole file. Throws nibble::Error naming the path for a truncated file, a malformed header,
// offsets outside the data, or an unknown dtype.
SafetensorsFile read_safetensors(const std::string& path);

// The format's dtype name of a torch dtype ("F32", "BF16", "I64", "U8", ...); throws for unsupported ones.
std::string safetensors_dtype(torch::ScalarType type);

}  // namespace nibble::core::checkpoint
