#include "core/checkpoint/manifest.h"

#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/checkpoint/checkpoint_dir.h"
#include "precision/error.h"

namespace nibble::core::checkpoint {
namespace {

using json = nlohmann::json;

// Any mesh dimension and the world are at most this (2^20 ranks): far above any real job, and small enough that
// products of checked values cannot overflow.
constexpr int64_t kMaxRanks = int64_t{1} << 20;
constexpr int64_t kMaxDim = int64_t{1} << 48;  // one tensor dimension

// The fields are read through a Reader that knows the path of the value it holds ("shards[3]"), so every
// message names the field exactly.
class Reader {
 public:
  Reader(const json& value, std::string path) : v_(value), path_(std::move(path)) {}

  [[noreturn]] void fail(const std::string& what) const { throw Error(what); }

  bool has(const char* key) const { return v_.contains(key); }
  Reader at(const char* key) const {
    require_object();
    auto it = v_.find(key);
    if (it == v_.end()) fail("missing field " + child(key));
    return Reader(*it, child(key));
  }
  Reader at(size_t i) const { return Reader(v_[i], path_ + "[" + std::to_string(i) + "]"); }

  void require_object() const {
    if (!v_.is_object()) fail(name() + " is " + type() + ", not an object");
  }
  size_t array_size() const {
    if (!v_.is_array()) fail(name() + " is " + type() + ", not an array");
    return v_.size();
  }
  std::string string() const {
    if (!v_.is_string()) fail(name() + " = " + shown() + " is not a string");
    return v_.get<std::string>();
  }
  bool boolean() const {
    if (!v_.is_boolean()) fail(name() + " = " + shown() + " is not true or false");
    return v_.get<bool>();
  }
  int64_t integer(int64_t lo, int64_t hi) const {
    // A JSON unsigned above int64's range fails the range check through its own branch.
    if (v_.is_number_unsigned() && v_.get<uint64_t>() > static_cast<uint64_t>(hi)) out_of_range(lo, hi);
    if (!v_.is_number_integer()) fail(name() + " = " + shown() + " is not an integer");
    const int64_t x = v_.get<int64_t>();
    if (x < lo || x > hi) out_of_range(lo, hi);
    return x;
  }
  uint64_t unsigned_integer(uint64_t hi) const {
    if (!v_.is_number_unsigned() || v_.get<uint64_t>() > hi)
      fail(name() + " = " + shown() + " is not an unsigned integer <= " + std::to_string(hi));
    return v_.get<uint64_t>();
  }
  const json& raw() const { return v_; }
  const std::string& path() const { return path_; }

 private:
  std::string child(const char* key) const { return path_.empty() ? key : path_ + "." + key; }
  std::string name() const { return path_.empty() ? "the top level" : path_; }
  std::string type() const {
    const std::string t = v_.type_name();  // "object", "array", "string", "number", "boolean", "null"
    return (t == "object" || t == "array" ? "an " : "a ") + t;
  }
  std::string shown() const {
    std::string s = v_.dump();
    return s.size() > 40 ? s.substr(0, 40) + "..." : s;
  }
  [[noreturn]] void out_of_range(int64_t lo, int64_t hi) const {
    fail(name() + " = " + shown() + " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }

  const json& v_;
  std::string path_;
};

ManifestLayout read_layout(const Reader& l) {
  l.require_object();
  ManifestLayout out;
  int64_t product = 1;
  for (auto [key, field] : {std::pair{"tp", &out.tp}, {"cp", &out.cp}, {"dp", &out.dp}, {"pp", &out.pp}}) {
    if (l.has(key)) *field = l.at(key).integer(1, kMaxRanks);
    product *= *field;
    if (product > kMaxRanks)
      l.fail("layout tp x cp x dp x pp exceeds " + std::to_string(kMaxRanks) + " ranks");
  }
  if (l.has("virtual_stages")) out.virtual_stages = l.at("virtual_stages").integer(1, kMaxRanks);
  if (l.has("pp_layers")) out.pp_layers = l.at("pp_layers").string();
  if (l.has("pp_embedding_as_layer")) out.pp_embedding_as_layer = l.at("pp_embedding_as_layer").boolean();
  if (l.has("pp_head_as_layer")) out.pp_head_as_layer = l.at("pp_head_as_layer").boolean();
  if (l.has("sequence_parallel")) out.sequence_parallel = l.at("sequence_parallel").boolean();
  out.world_size = l.has("world_size") ? l.at("world_size").integer(1, kMaxRanks) : product;
  if (out.world_size != product)
    l.fail("layout.world_size = " + std::to_string(out.world_size) + " is not tp x cp x dp x pp = " +
           std::to_string(product));
  return out;
}

ManifestShard read_shard(const Reader& s, int64_t index, const ManifestLayout& layout) {
  s.require_object();
  ManifestShard out;
  out.rank = s.at("rank").integer(0, layout.world_size - 1);
  if (out.rank != index) s.fail(s.path() + ".rank = " + std::to_string(out.rank) + ": shards must be listed by rank");
  // The file is opened as <dir>/<file>: only the name this rank writes is accepted, never a path.
  out.file = s.at("file").string();
  if (out.file != shard_name(static_cast<int>(index)))
    s.fail(s.path() + ".file = \"" + out.file.substr(0, 64) + "\" is not \"" + shard_name(static_cast<int>(index)) +
           "\", the file rank " + std::to_string(index) + " writes");
  // Coordinates are optional (older manifests) and default to what the mesh order gives (parallel/mesh.h:
  // rank = tp + t*(cp + c*(dp + d*pp))); present ones must agree with it.
  int64_t rest = index;
  for (auto [key, field, size] : {std::tuple{"tp_rank", &out.tp_rank, layout.tp}, {"cp_rank", &out.cp_rank, layout.cp},
                                  {"dp_rank", &out.dp_rank, layout.dp}, {"pp_rank", &out.pp_rank, layout.pp}}) {
    const int64_t expected = rest % size;
    rest /= size;
    *field = s.has(key) ? s.at(key).integer(0, size - 1) : expected;
    if (*field != expected)
      s.fail(s.path() + "." + key + " = " + std::to_string(*field) + " but rank " + std::to_string(index) + " of " +
             layout.describe() + " has " + key + " " + std::to_string(expected));
  }
  out.bytes = s.at("bytes").unsigned_integer(std::numeric_limits<uint64_t>::max());
  out.crc32 = static_cast<uint32_t>(s.at("crc32").unsigned_integer(std::numeric_limits<uint32_t>::max()));
  return out;
}

ManifestParam read_param(const Reader& p) {
  p.require_object();
  ManifestParam out;
  out.name = p.at("name").string();
  if (out.name.empty()) p.fail(p.path() + ".name is empty");
  const Reader shape = p.at("full_shape");
  const size_t dims = shape.array_size();
  if (dims > 8) p.fail(p.path() + ".full_shape has " + std::to_string(dims) + " dimensions (at most 8)");
  for (size_t i = 0; i < dims; ++i) out.full_shape.push_back(shape.at(i).integer(0, kMaxDim));
  out.shard_dim = p.at("shard_dim").integer(-1, static_cast<int64_t>(dims) - 1);
  return out;
}

Manifest read_manifest_fields(const Reader& m) {
  m.require_object();
  Manifest out;
  const std::string format = m.at("format").string();
  if (format != kManifestFormat)
    m.fail("format \"" + format.substr(0, 64) + "\" is not \"" + kManifestFormat + "\"");
  if (m.has("contents")) {
    out.contents = m.at("contents").string();
    if (out.contents != kContentsFull && out.contents != kContentsWeights)
      m.fail("contents = \"" + out.contents.substr(0, 64) + "\" is not \"" + kContentsFull + "\" or \"" +
             kContentsWeights + "\"");
  }
  constexpr int64_t kMaxCount = std::numeric_limits<int64_t>::max();
  out.step = m.at("step").integer(0, kMaxCount);
  out.consecutive_skips = m.at("consecutive_skips").integer(0, kMaxCount);
  out.skipped_total = m.at("skipped_total").integer(0, kMaxCount);
  out.recipe = m.at("recipe").string();
  out.layout = read_layout(m.at("layout"));
  if (m.has("rng")) {
    const Reader rng = m.at("rng");
    out.data_seed = rng.at("data_seed").unsigned_integer(std::numeric_limits<uint64_t>::max());
    out.model_seed = rng.at("model_seed").unsigned_integer(std::numeric_limits<uint64_t>::max());
  }
  if (m.has("data")) out.train_path = m.at("data").at("train").string();
  const Reader config = m.at("config");
  config.require_object();
  for (const auto& [key, value] : config.raw().items())
    out.config[key] = Reader(value, "config." + key).string();
  const Reader params = m.at("params");
  for (size_t i = 0, n = params.array_size(); i < n; ++i) out.params.push_back(read_param(params.at(i)));
  const Reader shards = m.at("shards");
  const size_t n = shards.array_size();
  if (static_cast<int64_t>(n) != out.layout.world_size)
    m.fail("shards lists " + std::to_string(n) + " files for a world of " + std::to_string(out.layout.world_size) +
           " ranks (" + out.layout.describe() + ")");
  for (size_t i = 0; i < n; ++i) out.shards.push_back(read_shard(shards.at(i), static_cast<int64_t>(i), out.layout));
  return out;
}

}  // namespace

std::string ManifestLayout::describe() const {
  std::string s = "tp=" + std::to_string(tp) + " cp=" + std::to_string(cp) + " dp=" + std::to_string(dp) +
                  " pp=" + std::to_string(pp);
  if (pp > 1)
    s += " (" + std::to_string(virtual_stages) + " virtual stages" +
         (pp_layers.empty() ? std::string() : ", split '" + pp_layers + "'") +
         (pp_embedding_as_layer ? ", embedding as a layer" : "") + (pp_head_as_layer ? ", head as a layer" : "") + ")";
  return s;
}

std::string manifest_json(const Manifest& m) {
  nlohmann::ordered_json j;
  j["format"] = kManifestFormat;
  j["contents"] = m.contents;
  j["step"] = m.step;
  j["consecutive_skips"] = m.consecutive_skips;
  j["skipped_total"] = m.skipped_total;
  j["recipe"] = m.recipe;
  const ManifestLayout& l = m.layout;
  j["layout"] = {{"tp", l.tp}, {"cp", l.cp}, {"dp", l.dp}, {"pp", l.pp}, {"virtual_stages", l.virtual_stages},
                 {"pp_layers", l.pp_layers}, {"pp_embedding_as_layer", l.pp_embedding_as_layer},
                 {"pp_head_as_layer", l.pp_head_as_layer}, {"world_size", l.world_size},
                 {"sequence_parallel", l.sequence_parallel}};
  // Training consumes no RNG stream: batches are a pure function of (data.seed, step), parameter init of
  // (model.seed, name), and stochastic rounding of the per-Linear counters stored in each shard.
  j["rng"] = {{"data_seed", m.data_seed}, {"model_seed", m.model_seed},
              {"linear_states", "linear.<layer>.sr_counter in each shard"}};
  j["data"] = {{"next_step", m.step}, {"train", m.train_path}};
  j["config"] = m.config;
  nlohmann::ordered_json params = nlohmann::ordered_json::array();
  for (const ManifestParam& p : m.params)
    params.push_back({{"name", p.name}, {"shard_dim", p.shard_dim}, {"full_shape", p.full_shape}});
  j["params"] = params;
  nlohmann::ordered_json shards = nlohmann::ordered_json::array();
  for (const ManifestShard& s : m.shards)
    shards.push_back({{"file", s.file}, {"rank", s.rank}, {"tp_rank", s.tp_rank}, {"cp_rank", s.cp_rank},
                      {"dp_rank", s.dp_rank}, {"pp_rank", s.pp_rank}, {"bytes", s.bytes}, {"crc32", s.crc32}});
  j["shards"] = shards;
  return j.dump(2) + "\n";
}

Manifest parse_manifest(std::string_view text, const std::string& dir) {
  const std::string prefix = "checkpoint '" + dir + "' has a malformed manifest.json: ";
  const json j = json::parse(text.begin(), text.end(), /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw Error(prefix + "not valid JSON");
  try {
    return read_manifest_fields(Reader(j, ""));
  } catch (const Error& e) {
    throw Error(prefix + e.what());
  }
}

Manifest read_manifest(const std::string& dir) {
  std::ifstream in(dir + "/manifest.json", std::ios::binary);
  if (!in) throw Error("checkpoint '" + dir + "' has no manifest.json");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_manifest(text.str(), dir);
}

}  // namespace nibble::core::checkpoint
