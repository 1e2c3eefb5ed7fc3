// nibble-train config keys the planner needs (see plan/train_config_reader.h).
#include "plan/train_config_reader.h"

#include <fstream>
#include <sstream>
#include <toml++/toml.h>

#include "precision/error.h"

namespace nibble::plan {
namespace {

template <typename T>
void read(const toml::table& t, const char* path, T& out, const std::string& source) {
  const toml::node_view<const toml::node> node = t.at_path(path);
  if (!node) return;
  const std::optional<T> v = node.value<T>();
  if (!v) throw InvalidArgument(source + ": " + path + " has the wrong type");
  out = *v;
}

}  // namespace

PlanInput nibble_defaults() {
  PlanInput in;
  // core/model/gpt_config.h and launch/train_config.h defaults.
  in.model.vocab = 256;
  in.model.hidden = 64;
  in.model.layers = 2;
  in.model.heads = 4;
  in.model.ffn = 0;
  in.model.seq_len = 64;
  in.model.tied_embeddings = false;
  in.model.mlp = MlpKind::kSwiGlu;
  in.model.attention = AttentionKind::kFlash;
  in.model.dropout = false;
  in.training.global_batch = 16;
  in.training.micro_batch = 16;
  return in;
}

PlanInput read_train_config_text(const std::string& toml_text, const std::string& source) {
  toml::table t;
  try {
    t = toml::parse(toml_text, source);
  } catch (const toml::parse_error& e) {
    throw InvalidArgument(source + ": not valid TOML: " + std::string(e.description()));
  }
  PlanInput in = nibble_defaults();
  ModelSpec& m = in.model;
  TrainingSpec& tr = in.training;
  read(t, "model.vocab", m.vocab, source);
  read(t, "model.hidden", m.hidden, source);
  read(t, "model.layers", m.layers, source);
  read(t, "model.heads", m.heads, source);
  read(t, "model.ffn_hidden", m.ffn, source);
  read(t, "model.seq_len", m.seq_len, source);
  read(t, "model.tie_embeddings", m.tied_embeddings, source);
  read(t, "model.recipe", tr.recipe, source);
  read(t, "model.bf16_first", tr.bf16_first, source);
  read(t, "model.bf16_last", tr.bf16_last, source);
  read(t, "model.lm_head_recipe", tr.lm_head_recipe, source);
  read(t, "train.global_batch", tr.global_batch, source);
  read(t, "train.micro_batch", tr.micro_batch, source);
  read(t, "optim.optimizer", tr.optimizer, source);
  read(t, "optim.state", tr.optimizer_state, source);
  int64_t zero = 0;
  read(t, "optim.zero", zero, source);
  tr.zero1 = zero == 1;
  read(t, "optim.zero_fp8_all_gather", tr.zero_fp8_all_gather, source);
  read(t, "parallel.sequence_parallel", tr.sequence_parallel, source);
  read(t, "parallel.pp_schedule", tr.pp_schedule, source);
  int64_t v = 1;
  read(t, "parallel.virtual_stages", v, source);
  tr.virtual_stages = static_cast<int>(v);
  m.validate();
  tr.validate();
  return in;
}

PlanInput read_train_config(const std::string& path) {
  std::ifstream file(path);
  if (!file) throw InvalidArgument("--config " + path + ": cannot be read");
  std::stringstream text;
  text << file.rdbuf();
  return read_train_config_text(text.str(), path);
}

}  // namespace nibble::plan
