#include "core/data/bpe_tokenizer.h"

#include <fstream>
#include <map>
#include <sstream>

#include "precision/error.h"

namespace nibble::core::data {
namespace {

uint64_t pair_key(int32_t a, int32_t b) { return (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b); }

bool is_letter(unsigned char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }
bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

// Replaces the non-overlapping occurrences of (a, b) in `ids`, left to right, by `merged`.
void apply_merge(std::vector<int32_t>& ids, int32_t a, int32_t b, int32_t merged) {
  size_t out = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i + 1 < ids.size() && ids[i] == a && ids[i + 1] == b) {
      ids[out++] = merged;
      ++i;
    } else {
      ids[out++] = ids[i];
    }
  }
  ids.resize(out);
}

}  // namespace

std::vector<std::pair<size_t, size_t>> bpe_chunks(const std::string& text) {
  std::vector<std::pair<size_t, size_t>> out;
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const size_t begin = i;
    size_t j = i + (s[i] == ' ' ? 1 : 0);
    if (j < n && (is_letter(s[j]) || is_digit(s[j]))) {
      const bool letters = is_letter(s[j]);
      while (j < n && (letters ? is_letter(s[j]) : is_digit(s[j]))) ++j;
      i = j;
    } else {
      i = begin + 1;  // any other single byte (a lone space included)
    }
    out.emplace_back(begin, i);
  }
  return out;
}

BpeTokenizer::BpeTokenizer(std::vector<std::pair<int32_t, int32_t>> merges) : merges_(std::move(merges)) {
  bytes_.resize(256);
  for (int b = 0; b < 256; ++b) bytes_[static_cast<size_t>(b)] = std::string(1, static_cast<char>(b));
  for (size_t i = 0; i < merges_.size(); ++i) {
    const auto [a, b] = merges_[i];
    rank_.emplace(pair_key(a, b), static_cast<int32_t>(i));
    bytes_.push_back(bytes_[static_cast<size_t>(a)] + bytes_[static_cast<size_t>(b)]);
  }
}

BpeTokenizer BpeTokenizer::train(const std::string& text, int64_t vocab) {
  if (vocab < 257 || vocab > 65536)
    throw InvalidArgument("BPE vocabulary " + std::to_string(vocab) +
                          " is out of range; valid: 257 .. 65536 (token files hold uint16 ids)");
  // The distinct chunks with their counts (std::map: a fixed order, so training is deterministic).
  std::map<std::string, int64_t> counts;
  for (const auto& [b, e] : bpe_chunks(text)) ++counts[text.substr(b, e - b)];
  std::vector<std::vector<int32_t>> words;
  std::vector<int64_t> freq;
  for (const auto& [chunk, count] : counts) {
    if (chunk.size() < 2) continue;  // no pair to merge
    words.emplace_back(chunk.begin(), chunk.end());
    for (auto& id : words.back()) id = static_cast<unsigned char>(id);
    freq.push_back(count);
  }
  std::vector<std::pair<int32_t, int32_t>> merges;
  std::unordered_map<uint64_t, int64_t> pairs;
  while (256 + static_cast<int64_t>(merges.size()) < vocab) {
    pairs.clear();
    for (size_t w = 0; w < words.size(); ++w)
      for (size_t i = 0; i + 1 < words[w].size(); ++i) pairs[pair_key(words[w][i], words[w][i + 1])] += freq[w];
    uint64_t best = 0;
    int64_t best_count = 0;
    for (const auto& [key, count] : pairs)
      if (count > best_count || (count == best_count && key < best)) {
        best = key;
        best_count = count;
      }
    if (best_count < 2) break;
    const auto a = static_cast<int32_t>(best >> 32), b = static_cast<int32_t>(best & 0xFFFFFFFFu);
    const auto merged = static_cast<int32_t>(256 + merges.size());
    merges.emplace_back(a, b);
    for (auto& word : words) apply_merge(word, a, b, merged);
  }
  return BpeTokenizer(std::move(merges));
}

BpeTokenizer BpeTokenizer::load(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw InvalidArgument("BPE merges file '" + path + "' cannot be read");
  std::vector<std::pair<int32_t, int32_t>> merges;
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    int64_t a = -1, b = -1;
    std::string extra;
    const int64_t next = 256 + static_cast<int64_t>(merges.size());
    if (!(fields >> a >> b) || (fields >> extra) || a < 0 || b < 0 || a >= next || b >= next)
      throw InvalidArgument("BPE merges file '" + path + "' line " + std::to_string(number) + ": '" + line +
                            "' is not two ids below " + std::to_string(next));
    merges.emplace_back(static_cast<int32_t>(a), static_cast<int32_t>(b));
  }
  return BpeTokenizer(std::move(merges));
}

void BpeTokenizer::save(const std::string& path) const {
  std::ofstream out(path);
  out << "# nibble byte-level BPE: " << merges_.size() << " merges, merge i makes id 256 + i from \"left right\"\n";
  for (const auto& [a, b] : merges_) out << a << " " << b << "\n";
  if (!out) throw Error("cannot write the BPE merges file '" + path + "'");
}

std::vector<int32_t> BpeTokenizer::encode_chunk(const std::string& chunk) const {
  std::vector<int32_t> ids(chunk.begin(), chunk.end());
  for (auto& id : ids) id = static_cast<unsigned char>(id);
  while (ids.size() > 1) {
    int32_t best = -1;
    for (size_t i = 0; i + 1 < ids.size(); ++i) {
      auto it = rank_.find(pair_key(ids[i], ids[i + 1]));
      if (it != rank_.end() && (best < 0 || it->second < best)) best = it->second;
    }
    if (best < 0) break;
    apply_merge(ids, merges_[static_cast<size_t>(best)].first, merges_[static_cast<size_t>(best)].second, 256 + best);
  }
  return ids;
}

std::vector<uint16_t> BpeTokenizer::encode(const std::string& text) const {
  std::unordered_map<std::string, std::vector<int32_t>> cache;  // corpora repeat their words
  std::vector<uint16_t> out;
  out.reserve(text.size() / 3);
  for (const auto& [b, e] : bpe_chunks(text)) {
    std::string chunk = text.substr(b, e - b);
    auto it = cache.find(chunk);
    if (it == cache.end()) it = cache.emplace(chunk, encode_chunk(chunk)).first;
    for (int32_t id : it->second) out.push_back(static_cast<uint16_t>(id));
  }
  return out;
}

std::string BpeTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string out;
  for (int64_t id : ids) out += id >= 0 && id < vocab() ? bytes_[static_cast<size_t>(id)] : std::string("?");
  return out;
}

}  // namespace nibble::core::data
