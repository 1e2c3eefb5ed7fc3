#include "core/data/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/data/byte_tokenizer.h"
#include "precision/error.h"

namespace nibble::core::data {

Tokenizer Tokenizer::for_token_file(const std::string& token_file_path) {
  const std::filesystem::path dir = std::filesystem::path(token_file_path).parent_path();
  const std::filesystem::path meta_path = dir / "meta.json";
  std::ifstream in(meta_path);
  if (!in) return bytes();
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw InvalidArgument("'" + meta_path.string() + "' is not valid JSON: " + e.what());
  }
  // Every field is checked for its type here, so a malformed file is named with the key (fuzz/ found that a
  // non-object or a number where a string belongs escaped as a bare json type error).
  auto bad = [&](const std::string& what) {
    throw InvalidArgument("'" + meta_path.string() + "': " + what + " (it is written by `nibble-train prepare`)");
  };
  if (!meta.is_object()) bad("must be a JSON object, got " + std::string(meta.type_name()));
  auto string_field = [&](const char* key, const char* fallback) {
    if (!meta.contains(key)) return std::string(fallback);
    if (!meta.at(key).is_string()) bad(std::string("\"") + key + "\" must be a string, got " + meta.at(key).dump());
    return meta.at(key).get<std::string>();
  };
  const std::string kind = string_field("tokenizer", "byte");
  if (kind == "byte") return bytes();
  if (kind != "bpe") bad("names tokenizer '" + kind + "'; known: byte, bpe");
  const std::string merges = (dir / string_field("merges", "bpe_merges.txt")).string();
  auto bpe = std::make_shared<const BpeTokenizer>(BpeTokenizer::load(merges));
  if (meta.contains("vocab")) {
    if (!meta.at("vocab").is_number_integer()) bad("\"vocab\" must be an integer, got " + meta.at("vocab").dump());
    if (meta.at("vocab").get<int64_t>() != bpe->vocab())
      throw InvalidArgument("'" + meta_path.string() + "' says vocab " + meta.at("vocab").dump() + " but '" + merges +
                            "' makes " + std::to_string(bpe->vocab()) + " ids");
  }
  return Tokenizer(std::move(bpe));
}

std::vector<uint16_t> Tokenizer::encode(const std::string& text) const {
  return bpe_ ? bpe_->encode(text) : byte_encode(text);
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  return bpe_ ? bpe_->decode(ids) : byte_decode(ids);
}

int64_t Tokenizer::vocab() const { return bpe_ ? bpe_->vocab() : kByteVocab; }

}  // namespace nibble::core::data
