#include "launch/train_config.h"

#include <functional>
#include <sstream>
#include <toml++/toml.h>

#include "optim/torch/optimizer.h"
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
std::string fmt_double(double v) { return format_config_number(v); }
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
      {"model.precision_policy", model_string(&core::model::GptConfig::precision_policy)},
      {"model.adaptive_ladder", model_string(&core::model::GptConfig::adaptive_ladder)},
      {"model.adaptive_snr_db", model_float(&core::model::GptConfig::adaptive_snr_db)},
      {"model.adaptive_patience", model_int(&core::model::GptConfig::adaptive_patience)},
      {"model.adaptive_measure", model_string(&core::model::GptConfig::adaptive_measure)},
      {"model.adaptive_probe_gain", model_float(&core::model::GptConfig::adaptive_probe_gain)},
      {"model.adaptive_probe_batches", model_int(&core::model::GptConfig::adaptive_probe_batches)},
      {"model.recipe_overrides", model_string(&core::model::GptConfig::recipe_overrides)},
      {"model.layer_recipes", model_string(&core::model::GptConfig::layer_recipes)},
      {"model.tie_embeddings", model_bool(&core::model::GptConfig::tie_embeddings)},
      {"model.compress_activations", model_string(&core::model::GptConfig::compress_activations)},
      {"model.recompute", model_string(&core::model::GptConfig::recompute)},
      {"model.attention_precision", model_string(&core::model::GptConfig::attention_precision)},
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
      {"train.stats_every", int_key(&TrainConfig::stats_every)},
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
      {"parallel.overlap_grad_reduce", bool_key(&TrainConfig::overlap_grad_reduce)},
      {"parallel.grad_bucket_mb", float_key(&TrainConfig::grad_bucket_mb)},
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

}  // namespace

std::string format_config_number(double v) {
  std::ostringstream s;
  s.precision(17);
  s << v;
  return s.str();
}

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

namespace {

// Every key of a parsed TOML document into `c`, checking names and types; `where` names the source in messages.
void apply_table(TrainConfig& c, const toml::table& root, const std::string& where) {
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

void apply_overrides(TrainConfig& c, const std::vector<std::pair<std::string, std::string>>& overrides) {
  for (const auto& [key, text] : overrides) {
    auto it = keys().find(key);
    if (it == keys().end()) unknown_key(key, "override --" + key);
    it->second.set(c, parse_text(key, text, it->second.kind));
  }
}

}  // namespace

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
    apply_table(c, root, "config '" + path + "'");
  }
  apply_overrides(c, overrides);
  return c;
}

TrainConfig load_config_text(const std::string& toml_text, const std::string& where) {
  TrainConfig c;
  toml::table root;
  try {
    root = toml::parse(toml_text);
  } catch (const toml::parse_error& e) {
    std::ostringstream msg;
    msg << where << " is not valid TOML: " << e.description() << " at line " << e.source().begin.line;
    throw InvalidArgument(msg.str());
  }
  apply_table(c, root, where);
  return c;
}

}  // namespace nibble::launch
