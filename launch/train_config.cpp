#include "launch/train_config.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <toml++/toml.h>

#include "core/data/tokenizer.h"
#include "launch/model_layout.h"
#include "optim/lr_schedule.h"
#include "optim/torch/optimizer.h"
#include "parallel/mesh.h"
#include "parallel/pipeline_schedule.h"
#include "precision/error.h"

namespace nibble::launch {
namespace {

// kSwitch: a boolean or a string (checkpoint.resume = true | "latest_valid"); its values are checked by validate().
enum class Kind { kInt, kFloat, kString, kBool, kSwitch };

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kInt: return "an integer";
    case Kind::kFloat: return "a number";
    case Kind::kString: return "a string";
    case Kind::kBool: return "a boolean (true/false)";
    case Kind::kSwitch: return "a boolean or a string";
  }
  return "";
}

// One key: its type and where it lives in the config. Values arrive as TOML nodes or override text, and are
// converted here so both paths check types the same way.
struct Key {
  Kind kind;
  std::function<void(TrainConfig&, const std::string&)> set;  // from canonical text
  std::function<std::string(const TrainConfig&)> get;
};

template <class T>
Key int_key(T TrainConfig::*m) {
  return {Kind::kInt, [m](TrainConfig& c, const std::string& v) { c.*m = static_cast<T>(std::stoll(v)); },
          [m](const TrainConfig& c) { return std::to_string(c.*m); }};
}
template <class T>
Key model_int(T core::model::GptConfig::*m) {
  return {Kind::kInt, [m](TrainConfig& c, const std::string& v) { c.model.*m = static_cast<T>(std::stoll(v)); },
          [m](const TrainConfig& c) { return std::to_string(c.model.*m); }};
}
std::string fmt_double(double v) {
  std::ostringstream s;
  s.precision(17);
  s << v;
  return s.str();
}
Key float_key(double TrainConfig::*m) {
  return {Kind::kFloat, [m](TrainConfig& c, const std::string& v) { c.*m = std::stod(v); },
          [m](const TrainConfig& c) { return fmt_double(c.*m); }};
}
Key model_float(double core::model::GptConfig::*m) {
  return {Kind::kFloat, [m](TrainConfig& c, const std::string& v) { c.model.*m = std::stod(v); },
          [m](const TrainConfig& c) { return fmt_double(c.model.*m); }};
}
Key string_key(std::string TrainConfig::*m) {
  return {Kind::kString, [m](TrainConfig& c, const std::string& v) { c.*m = v; },
          [m](const TrainConfig& c) { return c.*m; }};
}
Key model_string(std::string core::model::GptConfig::*m) {
  return {Kind::kString, [m](TrainConfig& c, const std::string& v) { c.model.*m = v; },
          [m](const TrainConfig& c) { return c.model.*m; }};
}
Key model_bool(bool core::model::GptConfig::*m) {
  return {Kind::kBool, [m](TrainConfig& c, const std::string& v) { c.model.*m = v == "true"; },
          [m](const TrainConfig& c) { return std::string(c.model.*m ? "true" : "false"); }};
}
Key bool_key(bool TrainConfig::*m) {
  return {Kind::kBool, [m](TrainConfig& c, const std::string& v) { c.*m = v == "true"; },
          [m](const TrainConfig& c) { return std::string(c.*m ? "true" : "false"); }};
}

const std::map<std::string, Key>& keys() {
  static const std::map<std::string, Key> k = {
      {"model.vocab", model_int(&core::model::GptConfig::vocab)},
      {"model.hidden", model_int(&core::model::GptConfig::hidden)},
      {"model.layers", model_int(&core::model::GptConfig::layers)},
      {"model.heads", model_int(&core::model::GptConfig::heads)},
      {"model.ffn_hidden", model_int(&core::model::GptConfig::ffn_hidden)},
      {"model.seq_len", model_int(&core::model::GptConfig::seq_len)},
      {"model.rope_theta", model_float(&core::model::GptConfig::rope_theta)},
      {"model.norm_eps", model_float(&core::model::GptConfig::norm_eps)},
      {"model.init_std", model_float(&core::model::GptConfig::init_std)},
      {"model.recipe", model_string(&core::model::GptConfig::recipe)},
      {"model.bf16_first", model_int(&core::model::GptConfig::bf16_first)},
      {"model.bf16_last", model_int(&core::model::GptConfig::bf16_last)},
      {"model.lm_head_recipe", model_string(&core::model::GptConfig::lm_head_recipe)},
      {"model.tie_embeddings", model_bool(&core::model::GptConfig::tie_embeddings)},
      {"model.seed", model_int(&core::model::GptConfig::seed)},
      {"data.train", string_key(&TrainConfig::train_path)},
      {"data.val", string_key(&TrainConfig::val_path)},
      {"data.seed", int_key(&TrainConfig::data_seed)},
      {"train.steps", int_key(&TrainConfig::steps)},
      {"train.global_batch", int_key(&TrainConfig::global_batch)},
      {"train.micro_batch", int_key(&TrainConfig::micro_batch)},
      {"train.eval_every", int_key(&TrainConfig::eval_every)},
      {"train.eval_batches", int_key(&TrainConfig::eval_batches)},
      {"train.max_nonfinite", int_key(&TrainConfig::max_nonfinite)},
      {"train.sample_tokens", int_key(&TrainConfig::sample_tokens)},
      {"train.sample_prompt", string_key(&TrainConfig::sample_prompt)},
      {"train.sample_temperature", float_key(&TrainConfig::sample_temperature)},
      {"train.out_dir", string_key(&TrainConfig::out_dir)},
      {"train.threads", int_key(&TrainConfig::threads)},
      {"train.device", string_key(&TrainConfig::device)},
      {"optim.optimizer", string_key(&TrainConfig::optimizer)},
      {"optim.state", string_key(&TrainConfig::state)},
      {"optim.schedule", string_key(&TrainConfig::schedule)},
      {"optim.lr", float_key(&TrainConfig::lr)},
      {"optim.min_lr_ratio", float_key(&TrainConfig::min_lr_ratio)},
      {"optim.weight_decay", float_key(&TrainConfig::weight_decay)},
      {"optim.beta1", float_key(&TrainConfig::beta1)},
      {"optim.beta2", float_key(&TrainConfig::beta2)},
      {"optim.eps", float_key(&TrainConfig::eps)},
      {"optim.grad_clip", float_key(&TrainConfig::grad_clip)},
      {"optim.warmup", int_key(&TrainConfig::warmup)},
      {"optim.zero", int_key(&TrainConfig::zero)},
      {"optim.zero_fp8_all_gather", bool_key(&TrainConfig::zero_fp8_all_gather)},
      {"parallel.tp", int_key(&TrainConfig::tp)},
      {"parallel.dp", int_key(&TrainConfig::dp)},
      {"parallel.sequence_parallel", bool_key(&TrainConfig::sequence_parallel)},
      {"parallel.reproducible_sums", bool_key(&TrainConfig::reproducible_sums)},
      {"parallel.timeout_s", float_key(&TrainConfig::timeout_s)},
      {"parallel.pp", int_key(&TrainConfig::pp)},
      {"parallel.cp", int_key(&TrainConfig::cp)},
      {"parallel.pp_schedule", string_key(&TrainConfig::pp_schedule)},
      {"parallel.virtual_stages", int_key(&TrainConfig::virtual_stages)},
      {"parallel.pp_layers", string_key(&TrainConfig::pp_layers)},
      {"parallel.pp_embedding_as_layer", bool_key(&TrainConfig::pp_embedding_as_layer)},
      {"parallel.pp_head_as_layer", bool_key(&TrainConfig::pp_head_as_layer)},
      {"parallel.cp_method", string_key(&TrainConfig::cp_method)},
      {"checkpoint.dir", string_key(&TrainConfig::checkpoint_dir)},
      {"checkpoint.every", int_key(&TrainConfig::checkpoint_every)},
      {"checkpoint.resume", Key{Kind::kSwitch, [](TrainConfig& c, const std::string& v) { c.resume = v; },
                                [](const TrainConfig& c) { return c.resume; }}},
      {"checkpoint.on_error", string_key(&TrainConfig::checkpoint_on_error)},
  };
  return k;
}

[[noreturn]] void unknown_key(const std::string& key, const std::string& where) {
  const std::string section = key.substr(0, key.find('.'));
  std::string valid;
  for (const auto& [name, k] : keys())
    if (name.rfind(section + ".", 0) == 0) valid += (valid.empty() ? "" : ", ") + name;
  if (valid.empty())
    for (const char* s : {"model", "data", "train", "optim", "parallel", "checkpoint"})
      valid += (valid.empty() ? "[" : ", [") + std::string(s) + "]";
  throw InvalidArgument(where + ": unknown key '" + key + "'; valid " +
                        (valid.front() == '[' ? "sections: " : "keys: ") + valid);
}

[[noreturn]] void wrong_type(const std::string& key, const std::string& value, Kind kind, const std::string& where) {
  throw InvalidArgument(where + ": " + key + " = " + value + " has the wrong type; expected " + kind_name(kind));
}

// Override text -> canonical text, checking the type.
std::string parse_text(const std::string& key, const std::string& text, Kind kind) {
  const std::string where = "override --" + key;
  try {
    size_t used = 0;
    switch (kind) {
      case Kind::kInt:
        (void)std::stoll(text, &used);
        break;
      case Kind::kFloat:
        (void)std::stod(text, &used);
        break;
      case Kind::kBool:
        if (text != "true" && text != "false") wrong_type(key, "'" + text + "'", kind, where);
        return text;
      case Kind::kString:
      case Kind::kSwitch:
        return text;
    }
    if (used != text.size()) wrong_type(key, "'" + text + "'", kind, where);
  } catch (const std::invalid_argument&) {
    wrong_type(key, "'" + text + "'", kind, where);
  } catch (const std::out_of_range&) {
    throw InvalidArgument(where + ": " + key + " = " + text + " is out of range");
  }
  return text;
}

// TOML node -> canonical text, checking the type (an integer is accepted where a number is expected).
std::string node_text(const std::string& key, const toml::node& node, Kind kind, const std::string& where) {
  std::ostringstream shown;
  node.visit([&shown](const auto& n) { shown << n; });
  switch (kind) {
    case Kind::kInt:
      if (auto v = node.value_exact<int64_t>()) return std::to_string(*v);
      break;
    case Kind::kFloat:
      if (node.is_number()) return fmt_double(*node.value<double>());
      break;
    case Kind::kString:
      if (auto v = node.value_exact<std::string>()) return *v;
      break;
    case Kind::kBool:
      if (auto v = node.value_exact<bool>()) return *v ? "true" : "false";
      break;
    case Kind::kSwitch:
      if (auto v = node.value_exact<bool>()) return *v ? "true" : "false";
      if (auto v = node.value_exact<std::string>()) return *v;
      break;
  }
  wrong_type(key, shown.str(), kind, where);
}

void require(bool ok, const std::string& key, const std::string& value, const std::string& valid) {
  if (!ok) throw InvalidArgument(key + " = " + value + " is invalid: " + valid);
}

}  // namespace

optim::OptimizerConfig optimizer_config(const TrainConfig& c) {
  optim::OptimizerConfig oc;
  oc.kind = c.optimizer;
  oc.state = c.state;
  oc.lr = c.lr;
  oc.beta1 = c.beta1;
  oc.beta2 = c.beta2;
  oc.eps = c.eps;
  oc.weight_decay = c.weight_decay;
  oc.seed = c.model.seed;
  return oc;
}

std::vector<int64_t> TrainConfig::pp_layer_counts() const {
  std::vector<int64_t> out;
  std::stringstream in(pp_layers);
  std::string item;
  while (std::getline(in, item, ',')) {
    size_t used = 0;
    int64_t v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || item.find_first_not_of(" ", used) != std::string::npos)
      throw InvalidArgument("parallel.pp_layers = '" + pp_layers + "': '" + item +
                            "' is not an integer; expected layer counts per virtual stage, e.g. \"3,2,2,3\"");
    out.push_back(v);
  }
  return out;
}

std::vector<std::string> config_keys() {
  std::vector<std::string> out;
  for (const auto& [name, k] : keys()) out.push_back(name);
  return out;
}

std::vector<ConfigKeyInfo> config_schema() {
  const TrainConfig defaults;
  std::vector<ConfigKeyInfo> out;
  for (const auto& [name, k] : keys()) {
    const char* type = k.kind == Kind::kInt      ? "integer"
                       : k.kind == Kind::kFloat  ? "number"
                       : k.kind == Kind::kString ? "string"
                       : k.kind == Kind::kBool   ? "boolean"
                                                 : "boolean or string";
    out.push_back({name, type, k.get(defaults)});
  }
  return out;
}

std::map<std::string, std::string> TrainConfig::to_map() const {
  std::map<std::string, std::string> out;
  for (const auto& [name, k] : keys()) out[name] = k.get(*this);
  return out;
}

TrainConfig load_config(const std::string& path, const std::vector<std::pair<std::string, std::string>>& overrides) {
  TrainConfig c;
  if (!path.empty()) {
    toml::table root;
    try {
      root = toml::parse_file(path);
    } catch (const toml::parse_error& e) {
      std::ostringstream msg;
      msg << "config '" << path << "' is not valid TOML: " << e.description() << " at line "
          << e.source().begin.line;
      throw InvalidArgument(msg.str());
    }
    const std::string where = "config '" + path + "'";
    for (const auto& [section, node] : root) {
      const std::string s(section.str());
      const toml::table* table = node.as_table();
      if (!table) unknown_key(s, where);
      for (const auto& [name, value] : *table) {
        const std::string key = s + "." + std::string(name.str());
        auto it = keys().find(key);
        if (it == keys().end()) unknown_key(key, where);
        it->second.set(c, node_text(key, value, it->second.kind, where));
      }
    }
  }
  for (const auto& [key, text] : overrides) {
    auto it = keys().find(key);
    if (it == keys().end()) unknown_key(key, "override --" + key);
    it->second.set(c, parse_text(key, text, it->second.kind));
  }
  return c;
}

void validate(const TrainConfig& c, int64_t world_size) {
  c.model.validate();
  require(c.steps >= 1, "train.steps", std::to_string(c.steps), "must be >= 1");
  require(c.global_batch >= 1, "train.global_batch", std::to_string(c.global_batch), "must be >= 1");
  require(c.micro_batch >= 1, "train.micro_batch", std::to_string(c.micro_batch), "must be >= 1");
  require(c.eval_every >= 0, "train.eval_every", std::to_string(c.eval_every), "must be >= 0 (0 = at the end only)");
  require(c.eval_batches >= 1, "train.eval_batches", std::to_string(c.eval_batches), "must be >= 1");
  require(c.max_nonfinite >= 1, "train.max_nonfinite", std::to_string(c.max_nonfinite), "must be >= 1");
  require(c.sample_tokens >= 0, "train.sample_tokens", std::to_string(c.sample_tokens), "must be >= 0");
  require(c.sample_temperature > 0, "train.sample_temperature", std::to_string(c.sample_temperature), "must be > 0");
  require(c.threads >= 0, "train.threads", std::to_string(c.threads), "must be >= 0 (0 = automatic)");
  require(c.device == "auto" || c.device == "cuda" || c.device == "cpu", "train.device", "\"" + c.device + "\"",
          "must be \"auto\", \"cuda\" or \"cpu\"");
  require(c.timeout_s > 0 && c.timeout_s <= 86400, "parallel.timeout_s", std::to_string(c.timeout_s),
          "must be in (0, 86400] seconds (the deadline of every collective)");
  require(c.grad_clip >= 0, "optim.grad_clip", std::to_string(c.grad_clip), "must be >= 0 (0 = off)");
  require(c.resume == "false" || c.resume == "true" || c.resume == "latest" || c.resume == "latest_valid",
          "checkpoint.resume", "'" + c.resume + "'",
          "must be false, true (= \"latest\") or \"latest_valid\" (the newest checkpoint that verifies)");
  require(c.checkpoint_on_error == "stop" || c.checkpoint_on_error == "continue", "checkpoint.on_error",
          "'" + c.checkpoint_on_error + "'", "must be \"stop\" or \"continue\"");
  require(c.checkpoint_every >= 0, "checkpoint.every", std::to_string(c.checkpoint_every),
          "must be >= 0 (0 = at the end only)");
  require(c.tp >= 1, "parallel.tp", std::to_string(c.tp), "must be >= 1");
  require(c.dp >= 1, "parallel.dp", std::to_string(c.dp), "must be >= 1");
  require(c.pp >= 1, "parallel.pp", std::to_string(c.pp), "must be >= 1");
  require(c.zero == 0 || c.zero == 1, "optim.zero", std::to_string(c.zero),
          "must be 0 (off) or 1 (optimizer states sharded over dp x cp); ZeRO stages 2 and 3 (sharded gradients "
          "and parameters) are not implemented");
  require(!c.zero_fp8_all_gather || c.zero == 1, "optim.zero_fp8_all_gather", "true", "needs optim.zero = 1");
  require(c.cp >= 1, "parallel.cp", std::to_string(c.cp), "must be >= 1");
  require(c.virtual_stages >= 1, "parallel.virtual_stages", std::to_string(c.virtual_stages), "must be >= 1");
  require(c.cp_method == "ring" || c.cp_method == "ulysses", "parallel.cp_method", "'" + c.cp_method + "'",
          "must be ring or ulysses");
  try {
    (void)optim::make_lr_schedule(c.schedule, c.warmup, c.steps, c.min_lr_ratio);
  } catch (const std::exception& e) {
    throw InvalidArgument(std::string("optim.schedule/warmup/min_lr_ratio: ") + e.what());
  }
  // The optimizer's keys under their config names (OptimizerConfig::validate below names its own fields).
  require(c.optimizer == "adamw" || c.optimizer == "sgd", "optim.optimizer", "'" + c.optimizer + "'",
          "must be adamw or sgd");
  require(c.lr >= 0 && c.lr < 1e30, "optim.lr", fmt_double(c.lr), "must be a finite number >= 0");
  require(c.beta1 >= 0 && c.beta1 < 1, "optim.beta1", fmt_double(c.beta1), "must be in [0, 1)");
  require(c.beta2 >= 0 && c.beta2 < 1, "optim.beta2", fmt_double(c.beta2), "must be in [0, 1)");
  require(c.eps >= 0, "optim.eps", fmt_double(c.eps), "must be >= 0");
  require(c.weight_decay >= 0, "optim.weight_decay", fmt_double(c.weight_decay), "must be >= 0");
  try {
    optimizer_config(c).validate();
  } catch (const std::exception& e) {
    throw InvalidArgument(std::string("[optim]: ") + e.what());
  }
  if (c.cp > 1 && c.cp_method == "ulysses")
    require(c.model.heads % (c.tp * c.cp) == 0, "parallel.cp", std::to_string(c.cp),
            "Ulysses splits each tp rank's model.heads / tp = " + std::to_string(c.model.heads / c.tp) +
                " heads over cp: choose cp dividing it, or parallel.cp_method = \"ring\"");
  // The pipeline: schedule name, virtual stages, the layer split, and the schedule itself (generated and
  // proven deadlock-free by the same checker the runtime uses).
  parallel::ScheduleOptions so;
  try {
    so.kind = parallel::parse_schedule(c.pp_schedule);
  } catch (const std::exception& e) {
    throw InvalidArgument(std::string("parallel.pp_schedule: ") + e.what());
  }
  require(c.virtual_stages == 1 || so.kind == parallel::ScheduleKind::kInterleaved, "parallel.virtual_stages",
          std::to_string(c.virtual_stages), "must be 1 unless parallel.pp_schedule = \"interleaved\"");
  require(c.pp_layers.empty() || !(c.pp_embedding_as_layer || c.pp_head_as_layer), "parallel.pp_layers",
          "'" + c.pp_layers + "'",
          "explicit layer counts cannot be combined with parallel.pp_embedding_as_layer / pp_head_as_layer (they "
          "shape the even split only): give the counts alone, or set pp_layers = \"\" with the flags");
  try {
    (void)parallel::assign_layers(layer_assignment(c));
  } catch (const std::exception& e) {
    throw InvalidArgument(std::string("[parallel] pipeline split: ") + e.what());
  }
  // The layout: the mesh's own rules (tp divides heads, ffn, vocab; 2*cp divides seq_len; the product is the
  // world size), before any rank starts.
  parallel::MeshShape shape;
  shape.tp = static_cast<int>(c.tp);
  shape.dp = static_cast<int>(c.dp);
  shape.pp = static_cast<int>(c.pp);
  shape.cp = static_cast<int>(c.cp);
  parallel::ModelShape ms;
  ms.num_heads = c.model.heads;
  ms.hidden = c.model.hidden;
  ms.ffn_hidden = c.model.ffn();
  ms.vocab = c.model.vocab;
  ms.seq_len = c.model.seq_len;  // (layers per stage: assign_layers above, which takes explicit counts)
  ms.sequence_parallel = c.sequence_parallel;
  try {
    parallel::validate_mesh(shape, world_size, ms);
  } catch (const std::exception& e) {
    throw InvalidArgument(std::string("[parallel] layout: ") + e.what());
  }
  if (c.global_batch % (c.micro_batch * c.dp) == 0 && c.pp > 1) {
    so.stages = static_cast<int>(c.pp);
    so.virtual_chunks = static_cast<int>(c.virtual_stages);
    so.microbatches = static_cast<int>(c.global_batch / (c.micro_batch * c.dp));
    try {
      parallel::check_schedule(parallel::make_schedule(so));
    } catch (const std::exception& e) {
      throw InvalidArgument("[parallel] pipeline schedule " + c.pp_schedule + " with pp = " + std::to_string(c.pp) +
                            ", virtual_stages = " + std::to_string(c.virtual_stages) + " and " +
                            std::to_string(so.microbatches) + " micro-batches (global_batch / (micro_batch * dp)): " +
                            e.what());
    }
  }
  // The token files exist (a missing one is a config error, before any rank starts), and their tokenizer
  // (meta.json beside them) fits the model's vocabulary.
  for (const auto& [key, path] : {std::pair{"data.train", c.train_path}, std::pair{"data.val", c.val_path}}) {
    std::ifstream probe(path, std::ios::binary);
    require(static_cast<bool>(probe), key, "'" + path + "'",
            "the token file cannot be opened (" + std::string(std::strerror(errno)) +
                "); make it with `nibble-train prepare --input corpus.txt --out DIR`");
  }
  const int64_t token_vocab = core::data::Tokenizer::for_token_file(c.train_path).vocab();
  require(c.model.vocab >= token_vocab, "model.vocab", std::to_string(c.model.vocab),
          "must be >= " + std::to_string(token_vocab) + ", the vocabulary of the tokenizer that made data.train ('" +
              c.train_path + "', see meta.json beside it)");
  require(c.global_batch % (c.micro_batch * c.dp) == 0, "train.global_batch", std::to_string(c.global_batch),
          "must be divisible by train.micro_batch * parallel.dp = " + std::to_string(c.micro_batch) + " * " +
              std::to_string(c.dp) + " = " + std::to_string(c.micro_batch * c.dp));
  require(c.global_batch % c.dp == 0, "train.global_batch", std::to_string(c.global_batch),
          "eval splits it over parallel.dp = " + std::to_string(c.dp));
}

}  // namespace nibble::launch
