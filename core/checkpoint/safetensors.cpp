#include "core/checkpoint/safetensors.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/checkpoint/safetensors_header.h"
#include "precision/error.h"

namespace nibble::core::checkpoint {

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__" || header.contains(name))
      throw InvalidArgument("safetensors: tensor name '" + name + "' is reserved or used twice");
    torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(c.numel()) * c.element_size();
    header[name] = {{"dtype", safetensors_dtype(c.scalar_type())},
                    {"shape", c.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(c);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t n = text.size();  // the format is little-endian; so is every machine nibble builds for
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(&n), 8);
  out.write(text.data(), static_cast<std::streamsize>(n));
  for (const torch::Tensor& c : data)
    out.write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.numel() * c.element_size()));
  out.close();
  if (!out) throw Error("safetensors: could not write '" + path + "': " + std::strerror(errno));
}

SafetensorsFile read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw Error("safetensors file '" + path + "' cannot be opened");
  const auto size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  uint64_t n = 0;
  const bool readable = size >= 8 && static_cast<bool>(in.read(reinterpret_cast<char*>(&n), 8));
  check_safetensors_header_length(readable, n, size, path);
  std::string text(n, '\0');
  in.read(text.data(), static_cast<std::streamsize>(n));
  const uint64_t data_size = size - 8 - n;
  const SafetensorsHeader header = parse_safetensors_header(text, data_size, path);
  std::string data(data_size, '\0');
  in.read(data.data(), static_cast<std::streamsize>(data_size));
  SafetensorsFile f;
  f.metadata = header.metadata;
  for (const SafetensorsEntry& e : header.entries) {
    torch::Tensor t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype));
    if (e.end > e.begin) std::memcpy(t.data_ptr(), data.data() + e.begin, e.end - e.begin);
    f.tensors[e.name] = t;
  }
  return f;
}

}  // namespace nibble::core::checkpoint
