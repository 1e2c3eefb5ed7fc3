#include "core/checkpoint/safetensors.h"

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "precision/error.h"

namespace nibble::core::checkpoint {
namespace {

constexpr std::array<std::pair<const char*, torch::ScalarType>, 12> kDtypes = {{
    {"F64", torch::kFloat64},
    {"F32", torch::kFloat32},
    {"F16", torch::kFloat16},
    {"BF16", torch::kBFloat16},
    {"I64", torch::kInt64},
    {"I32", torch::kInt32},
    {"I16", torch::kInt16},
    {"I8", torch::kInt8},
    {"U8", torch::kUInt8},
    {"U16", torch::kUInt16},
    {"BOOL", torch::kBool},
    {"F8_E4M3", torch::kFloat8_e4m3fn},
}};

torch::ScalarType parse_dtype(const std::string& name, const std::string& path) {
  for (const auto& [n, t] : kDtypes)
    if (name == n) return t;
  throw Error("safetensors file '" + path + "': unsupported dtype '" + name + "'");
}

}  // namespace

std::string safetensors_dtype(torch::ScalarType type) {
  for (const auto& [n, t] : kDtypes)
    if (t == type) return n;
  throw InvalidArgument("safetensors: dtype " + std::string(c10::toString(type)) + " has no safetensors name");
}

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
  if (size < 8 || !in.read(reinterpret_cast<char*>(&n), 8))
    throw Error("safetensors file '" + path + "' is truncated: " + std::to_string(size) + " bytes, no header");
  if (n > size - 8)
    throw Error("safetensors file '" + path + "' is truncated: header of " + std::to_string(n) +
                " bytes but the file has " + std::to_string(size) + " bytes");
  std::string text(n, '\0');
  in.read(text.data(), static_cast<std::streamsize>(n));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    throw Error("safetensors file '" + path + "' has a malformed header: " + e.what());
  }
  const uint64_t data_size = size - 8 - n;
  std::string data(data_size, '\0');
  in.read(data.data(), static_cast<std::streamsize>(data_size));
  SafetensorsFile f;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      f.metadata = entry.get<std::map<std::string, std::string>>();
      continue;
    }
    const auto type = parse_dtype(entry.at("dtype").get<std::string>(), path);
    const auto shape = entry.at("shape").get<std::vector<int64_t>>();
    const auto offsets = entry.at("data_offsets").get<std::vector<uint64_t>>();
    torch::Tensor t = torch::empty(shape, torch::TensorOptions().dtype(type));
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    if (offsets.size() != 2 || offsets[1] < offsets[0] || offsets[1] - offsets[0] != bytes || offsets[1] > data_size)
      throw Error("safetensors file '" + path + "': tensor '" + name + "' has data offsets outside the " +
                  std::to_string(data_size) + " data bytes (truncated file?)");
    std::memcpy(t.data_ptr(), data.data() + offsets[0], bytes);
    f.tensors[name] = t;
  }
  return f;
}

}  // namespace nibble::core::checkpoint
