#include "launch/checkpoint_reshard.h"

#include <algorithm>

#include "parallel/nn/state_fields.h"
#include "parallel/nn/tp_state_reshard.h"
#include "parallel/nn/zero_optimizer.h"
#include "precision/error.h"

namespace nibble::launch {
namespace {

using core::checkpoint::SafetensorsIndex;

std::string saved_value(const Manifest& m, const std::string& key, const std::string& otherwise) {
  auto it = m.config.find(key);
  return it == m.config.end() ? otherwise : it->second;
}
bool weights_only(const Manifest& m) { return m.contents == core::checkpoint::kContentsWeights; }
bool saved_zero(const Manifest& m) { return !weights_only(m) && saved_value(m, "optim.zero", "0") != "0"; }

// The saved file of dp rank 0, cp rank 0 and tp rank `t` that holds `key` (the first pipeline stage that does:
// a tied embedding's copy on the last stage equals the first stage's), or null.
const std::pair<const size_t, SafetensorsIndex>* holder(const Manifest& m, const SavedShards& saved,
                                                       const std::string& key, int64_t t) {
  for (const auto& entry : saved) {
    const core::checkpoint::ManifestShard& s = m.shards.at(entry.first);
    if (s.dp_rank == 0 && s.cp_rank == 0 && s.tp_rank == t && entry.second.contains(key)) return &entry;
  }
  return nullptr;
}

// This rank's tp part of the saved parameter `key`: only the rows (columns) of the saved tp shards that overlap
// it are read.
torch::Tensor read_my_part(const std::string& key, int shard_dim, const std::vector<int64_t>& full_shape,
                           const Manifest& m, const SavedShards& saved, const parallel::Mesh& mesh) {
  if (shard_dim < 0) {
    const auto* f = holder(m, saved, key, 0);
    if (!f) throw Error("resharding: no saved shard holds '" + key + "'");
    return f->second.read(key);
  }
  const int64_t saved_tp = m.layout.tp, extent = full_shape.at(static_cast<size_t>(shard_dim));
  if (extent % saved_tp != 0)
    throw Error("resharding: '" + key + "' of shape " + c10::str(c10::IntArrayRef(full_shape)) + " has dim " +
                std::to_string(shard_dim) + " = " + std::to_string(extent) + ", not split by the saved tp=" +
                std::to_string(saved_tp));
  const int64_t was = extent / saved_tp, part = extent / mesh.shape().tp;
  const int64_t lo = mesh.coord().tp * part, hi = lo + part;
  std::vector<int64_t> saved_shape = full_shape;
  saved_shape[static_cast<size_t>(shard_dim)] = was;
  std::vector<torch::Tensor> pieces;
  for (int64_t t = lo / was; t * was < hi; ++t) {
    const auto* f = holder(m, saved, key, t);
    if (!f) throw Error("resharding: the shard of saved tp rank " + std::to_string(t) + " holds no '" + key + "'");
    const std::vector<int64_t>& shape = f->second.entry(key).shape;
    if (shape != saved_shape)
      throw Error("resharding: '" + key + "' in " + f->second.path() + " has shape " +
                  c10::str(c10::IntArrayRef(shape)) + "; saved tp rank " + std::to_string(t) + "'s shard of the " +
                  "model's " + c10::str(c10::IntArrayRef(full_shape)) + " is " +
                  c10::str(c10::IntArrayRef(saved_shape)));
    const int64_t a = std::max(lo, t * was), b = std::min(hi, (t + 1) * was);
    pieces.push_back(f->second.read_narrow(key, shard_dim, a - t * was, b - a));
  }
  return pieces.size() == 1 ? pieces[0] : torch::cat(pieces, shard_dim);
}

// "<param>.<field>" -> tensor of every "optim.<param>.<field>" in `f`.
void read_state_fields(const SafetensorsIndex& f, const std::string& param, std::map<std::string, torch::Tensor>& out) {
  const std::string prefix = "optim." + param + ".";
  for (const core::checkpoint::SafetensorsEntry& e : f.entries())
    if (e.name.rfind(prefix, 0) == 0 && e.name.find('.', prefix.size()) == std::string::npos)
      out[e.name.substr(6)] = f.read(e.name);
}

// The optimizer state of saved tp rank t's shard of `param` as a plain optimizer over that shard holds it
// ("<field>" -> tensor; empty when the parameter never stepped).
std::map<std::string, torch::Tensor> saved_tp_state(const std::string& param, int64_t t, const Manifest& m,
                                                    const SavedShards& saved, const optim::OptimizerConfig& oc) {
  const auto* f = holder(m, saved, "model." + param, t);
  if (!f) throw Error("resharding: the shard of saved tp rank " + std::to_string(t) + " holds no 'model." + param + "'");
  std::map<std::string, torch::Tensor> state;
  if (!saved_zero(m)) {
    read_state_fields(f->second, param, state);
    return parallel::nn::fields_of(state, param);
  }
  // ZeRO-1: each rank of this (tp, pp) rank's dp x cp group holds a piece; the flat layout they share is made of
  // that stage's parameters in registration order, which is the order its file holds "model.*" in.
  parallel::nn::ParamShapes stage;
  for (const core::checkpoint::SafetensorsEntry& e : f->second.entries())
    if (e.name.rfind("model.", 0) == 0) stage.emplace_back(e.name.substr(6), e.shape);
  const core::checkpoint::ManifestLayout& l = m.layout;
  const parallel::MeshShape shape{static_cast<int>(l.tp), static_cast<int>(l.cp), static_cast<int>(l.dp),
                                  static_cast<int>(l.pp)};
  std::vector<std::map<std::string, torch::Tensor>> shards;
  for (int r : parallel::group_members(shape, parallel::GroupKind::kDpCp, static_cast<int>(f->first))) {
    auto it = saved.find(static_cast<size_t>(r));
    if (it == saved.end()) throw Error("resharding: the ZeRO-1 shard file of rank " + std::to_string(r) + " was not opened");
    read_state_fields(it->second, param, shards.emplace_back());
  }
  return parallel::nn::fields_of(parallel::nn::gather_zero_state(shards, stage, oc), param);
}

// This rank's optimizer state of one parameter ("optim.<param>.<field>"), resharded from the saved states.
void reshard_state(const core::model::ParamInfo& p, const Manifest& m, const SavedShards& saved,
                   const parallel::Mesh& mesh, const TrainConfig& config, const parallel::nn::ParamShapes& mine,
                   Resharded& result) {
  const optim::OptimizerConfig oc = optimizer_config(config);
  std::vector<std::map<std::string, torch::Tensor>> pieces;
  const int64_t saved_tp = p.shard_dim < 0 ? 1 : m.layout.tp;
  for (int64_t t = 0; t < saved_tp; ++t) pieces.push_back(saved_tp_state(p.name, t, m, saved, oc));
  size_t stepped = 0;
  for (const auto& piece : pieces) stepped += piece.empty() ? 0 : 1;
  if (stepped == 0) return;  // never stepped: no state, as the saving job had none
  if (stepped != pieces.size())
    throw Error("resharding: some saved tp shards of '" + p.name + "' hold optimizer state and some do not");
  parallel::nn::TpStateReshard moved =
      parallel::nn::reshard_tp_state(p.name, pieces, p.shard_dim, p.full_shape, mesh.shape().tp, mesh.coord().tp, oc);
  if (!moved.exact) result.inexact.push_back(p.name + ": " + moved.why_not);
  std::map<std::string, torch::Tensor> state;
  for (auto& [field, t] : moved.fields) state[p.name + "." + field] = std::move(t);
  if (config.zero == 1)  // only this parameter's fields: split_zero_state skips the others
    state = parallel::nn::split_zero_state(state, mine, oc, mesh.dp_cp().size(), mesh.dp_cp().rank());
  for (auto& [key, t] : state) result.tensors["optim." + key] = std::move(t);
}

}  // namespace

std::string saved_layout(const Manifest& m) { return m.layout.describe(); }

bool same_layout(const Manifest& m, const TrainConfig& c) {
  const core::checkpoint::ManifestLayout& l = m.layout;
  // (optim.zero decides what each file holds: one dp rank's shard of the states, or all of them)
  const bool same_zero = weights_only(m) || saved_zero(m) == (c.zero != 0);
  return l.tp == c.tp && l.dp == c.dp && l.cp == c.cp && l.pp == c.pp && l.virtual_stages == c.virtual_stages &&
         l.pp_layers == c.pp_layers && l.pp_embedding_as_layer == c.pp_embedding_as_layer &&
         l.pp_head_as_layer == c.pp_head_as_layer && same_zero;
}

std::vector<size_t> reshard_sources(const Manifest& m) {
  std::vector<size_t> out;
  for (size_t i = 0; i < m.shards.size(); ++i)
    if (saved_zero(m) || (m.shards[i].dp_rank == 0 && m.shards[i].cp_rank == 0)) out.push_back(i);
  return out;
}

void check_reshardable(const Manifest& m, const TrainConfig& c) {
  // A weights-only checkpoint (nibble-train import) has no optimizer states: resume starts them fresh.
  for (const auto& [key, now] : {std::pair<std::string, std::string>{"optim.optimizer", c.optimizer},
                                 std::pair<std::string, std::string>{"optim.state", c.state}}) {
    const std::string was = saved_value(m, key, key == "optim.state" ? "fp32" : now);
    if (!weights_only(m) && was != now)
      throw Error("the checkpoint's " + key + " is '" + was + "', this job's is '" + now + "'; resume with " + key +
                  " = " + was);
  }
  for (const char* key : {"model.vocab", "model.hidden", "model.layers", "model.heads", "model.ffn_hidden",
                          "model.tie_embeddings"})
    if (const std::string was = saved_value(m, key, ""); !was.empty() && was != c.to_map().at(key))
      throw Error(std::string("the checkpoint was written with ") + key + " = " + was + ", this job has " +
                  c.to_map().at(key) + ": not the same model");
}

Resharded reshard(const Manifest& m, const SavedShards& saved, const core::model::Gpt& model,
                  const parallel::Mesh& mesh, const TrainConfig& config) {
  Resharded result;
  std::map<std::string, torch::Tensor>& out = result.tensors;
  parallel::nn::ParamShapes mine;
  for (const auto& [name, t] : model.named_parameters()) mine.emplace_back(name, t.sizes().vec());
  for (const core::model::ParamInfo& p : model.params()) {
    out["model." + p.name] = read_my_part("model." + p.name, p.shard_dim, p.full_shape, m, saved, mesh);
    if (!weights_only(m)) reshard_state(p, m, saved, mesh, config, mine, result);
  }
  // Everything else (Linear states, ...) is small: read whole from the files of dp, cp and tp rank 0.
  std::map<size_t, std::map<std::string, torch::Tensor>> files;
  for (const auto& [index, f] : saved) {
    const core::checkpoint::ManifestShard& s = m.shards.at(index);
    if (s.dp_rank != 0 || s.cp_rank != 0 || s.tp_rank != 0) continue;
    for (const core::checkpoint::SafetensorsEntry& e : f.entries())
      if (e.name.rfind("model.", 0) != 0 && e.name.rfind("optim.", 0) != 0) files[index][e.name] = f.read(e.name);
  }
  // Linear states from saved tp rank 0 (equal on every tp rank); each layer's name is unique, so the pp stage
  // that held it does not matter. The adaptive precision rungs are in every shard (launch/precision_policy.h).
  for (const auto& [index, tensors] : files) {
    if (m.shards.at(index).tp_rank != 0) continue;
    for (const std::string prefix : {"linear.", "precision_policy."})
      for (auto it = tensors.lower_bound(prefix); it != tensors.end() && it->first.rfind(prefix, 0) == 0; ++it)
        out.emplace(it->first, it->second);
  }
  return result;
}

}  // namespace nibble::launch
