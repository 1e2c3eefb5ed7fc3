#include "core/checkpoint/safetensors_header.h"

#include <algorithm>
#include <array>
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

}  // namespace

torch::ScalarType parse_safetensors_dtype(const std::string& name, const std::string& path) {
  for (const auto& [n, t] : kDtypes)
    if (name == n) return t;
  throw Error("safetensors file '" + path + "': unsupported dtype '" + name + "'");
}

std::string safetensors_dtype(torch::ScalarType type) {
  for (const auto& [n, t] : kDtypes)
    if (t == type) return n;
  throw InvalidArgument("safetensors: dtype " + std::string(c10::toString(type)) + " has no safetensors name");
}

void check_safetensors_header_length(bool readable, uint64_t n, uint64_t size, const std::string& path) {
  if (size < 8 || !readable)
    throw Error("safetensors file '" + path + "' is truncated: " + std::to_string(size) + " bytes, no header");
  if (n > size - 8)
    throw Error("safetensors file '" + path + "' is truncated: header of " + std::to_string(n) +
                " bytes but the file has " + std::to_string(size) + " bytes");
}

SafetensorsHeader parse_safetensors_header(const std::string& text, uint64_t data_size, const std::string& path) {
  // ordered_json keeps the file's order, which is the writer's (the order of the data, too).
  nlohmann::ordered_json header;
  try {
    header = nlohmann::ordered_json::parse(text);
  } catch (const std::exception& e) {
    throw Error("safetensors file '" + path + "' has a malformed header: " + e.what());
  }
  // Every field is checked before it is used, and the shape against the data before anything is allocated:
  // fuzz/fuzz_safetensors.cpp found missing keys and wrong types escaping as bare json errors.
  auto bad = [&](const std::string& what) -> void {
    throw Error("safetensors file '" + path + "' has a malformed header: " + what);
  };
  if (!header.is_object()) bad("it must be a JSON object, got " + std::string(header.type_name()));
  SafetensorsHeader h;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) bad("__metadata__ must be an object of strings");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) bad("__metadata__ entry '" + key + "' must be a string, got " + value.dump());
        h.metadata[key] = value.get<std::string>();
      }
      continue;
    }
    const std::string who = "tensor '" + name + "' ";
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") || !entry.contains("data_offsets"))
      bad(who + "must be an object with dtype, shape and data_offsets");
    if (!entry["dtype"].is_string()) bad(who + "dtype must be a string, got " + entry["dtype"].dump());
    const auto type = parse_safetensors_dtype(entry["dtype"].get<std::string>(), path);
    const uint64_t element = static_cast<uint64_t>(c10::elementSize(type));
    if (!entry["shape"].is_array()) bad(who + "shape must be an array, got " + entry["shape"].dump());
    std::vector<int64_t> shape;
    uint64_t numel = 1;
    for (const auto& d : entry["shape"]) {
      if (!d.is_number_unsigned()) bad(who + "shape " + entry["shape"].dump() + " must hold non-negative integers");
      const uint64_t v = d.get<uint64_t>();
      if (v > (uint64_t{1} << 48)) bad(who + "shape " + entry["shape"].dump() + " has a dimension over 2^48");
      // (the product stays within the data: larger is refused before it could overflow or be allocated)
      if (v != 0 && numel > data_size / element / v) {
        numel = UINT64_MAX;
      } else {
        numel *= v;
      }
      shape.push_back(static_cast<int64_t>(v));
    }
    const auto& off = entry["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      bad(who + "data_offsets must be two non-negative integers, got " + off.dump());
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    if (numel == UINT64_MAX || end < begin || end > data_size || end - begin != numel * element)
      throw Error("safetensors file '" + path + "': " + who + "has data offsets outside the " +
                  std::to_string(data_size) + " data bytes or not matching its shape and dtype (truncated file?)");
    h.entries.push_back({name, type, std::move(shape), begin, end});
  }
  std::stable_sort(h.entries.begin(), h.entries.end(),
                   [](const SafetensorsEntry& a, const SafetensorsEntry& b) { return a.begin < b.begin; });
  return h;
}

}  // namespace nibble::core::checkpoint
