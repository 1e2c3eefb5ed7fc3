#include "launch/checkpoint_reshard.h"

#include "precision/error.h"

namespace nibble::launch {
namespace {

// The saved tensor `key` assembled over the saved tp ranks: pieces[t] from a file of tp rank t (any pp).
// shard_dim < 0: the value of any of them (replicated).
torch::Tensor assemble(const std::string& key, int shard_dim, const std::vector<int64_t>& full_shape,
                       const Manifest& manifest, const std::map<size_t, std::map<std::string, torch::Tensor>>& files) {
  const int64_t saved_tp = manifest.layout.tp;
  std::vector<torch::Tensor> pieces(static_cast<size_t>(saved_tp));
  for (const auto& [index, tensors] : files) {
    auto it = tensors.find(key);
    if (it == tensors.end()) continue;
    const int64_t t = manifest.shards.at(index).tp_rank;
    if (!pieces[static_cast<size_t>(t)].defined()) pieces[static_cast<size_t>(t)] = it->second;
  }
  if (shard_dim < 0) {
    for (const auto& p : pieces)
      if (p.defined()) return p;
    throw Error("resharding: no saved shard holds '" + key + "'");
  }
  for (int64_t t = 0; t < saved_tp; ++t)
    if (!pieces[static_cast<size_t>(t)].defined())
      throw Error("resharding: the shard of saved tp rank " + std::to_string(t) + " holds no '" + key + "'");
  torch::Tensor full = torch::cat(pieces, shard_dim);
  if (!full_shape.empty() && full.sizes().vec() != full_shape)
    throw Error("resharding: '" + key + "' assembles to " + c10::str(full.sizes()) + ", the model's is " +
                c10::str(c10::IntArrayRef(full_shape)));
  return full;
}

torch::Tensor my_part(const torch::Tensor& full, int shard_dim, const parallel::Mesh& mesh) {
  if (shard_dim < 0) return full.clone();
  const int64_t part = full.size(shard_dim) / mesh.shape().tp;
  return full.narrow(shard_dim, mesh.coord().tp * part, part).contiguous();
}

}  // namespace

std::string saved_layout(const Manifest& m) { return m.layout.describe(); }

bool same_layout(const Manifest& m, const TrainConfig& c) {
  const core::checkpoint::ManifestLayout& l = m.layout;
  return l.tp == c.tp && l.dp == c.dp && l.cp == c.cp && l.pp == c.pp && l.virtual_stages == c.virtual_stages &&
         l.pp_layers == c.pp_layers && l.pp_embedding_as_layer == c.pp_embedding_as_layer &&
         l.pp_head_as_layer == c.pp_head_as_layer;
}

std::vector<size_t> reshard_sources(const Manifest& m) {
  std::vector<size_t> out;
  for (size_t i = 0; i < m.shards.size(); ++i)
    if (m.shards[i].dp_rank == 0 && m.shards[i].cp_rank == 0) out.push_back(i);
  return out;
}

void check_reshardable(const Manifest& m, const TrainConfig& c) {
  auto saved_value = [&m](const std::string& key, const std::string& otherwise) {
    auto it = m.config.find(key);
    return it == m.config.end() ? otherwise : it->second;
  };
  // A weights-only checkpoint (nibble-train import) has no optimizer states to split: resume starts them fresh.
  const bool weights_only = m.contents == core::checkpoint::kContentsWeights;
  const std::string saved_zero = saved_value("optim.zero", "0");
  if (!weights_only && (saved_zero != "0" || c.zero != 0))
    throw Error("resharding a checkpoint from " + saved_layout(m) + " with ZeRO-1 optimizer states (optim.zero = " +
                saved_zero + " saved, " + std::to_string(c.zero) + " now) is not implemented: each dp rank's file "
                "holds only its shard of the states. Resume at the saved layout with the same optim.zero");
  const std::string state = saved_value("optim.state", "fp32");
  if (!weights_only && state != c.state)
    throw Error("the checkpoint's optimizer states are '" + state + "', this job's optim.state is '" + c.state +
                "'; resume with optim.state = " + state);
  if (!weights_only && state != "fp32" && state != "bf16")
    throw Error("resharding a checkpoint from " + saved_layout(m) + " to tp=" + std::to_string(c.tp) + " cp=" +
                std::to_string(c.cp) + " dp=" + std::to_string(c.dp) + " pp=" + std::to_string(c.pp) +
                " is not possible with optim.state = " + state + ": its per-group scales span the flattened "
                "tensor and a new split would cut through them. Resume at the saved layout, or train with "
                "optim.state = fp32 or bf16 (elementwise states reshard exactly)");
  for (const char* key : {"model.vocab", "model.hidden", "model.layers", "model.heads", "model.ffn_hidden",
                          "model.tie_embeddings"})
    if (const std::string was = saved_value(key, ""); !was.empty() && was != c.to_map().at(key))
      throw Error(std::string("the checkpoint was written with ") + key + " = " + was + ", this job has " +
                  c.to_map().at(key) + ": not the same model");
}

std::map<std::string, torch::Tensor> reshard(const Manifest& m,
                                             const std::map<size_t, std::map<std::string, torch::Tensor>>& files,
                                             const core::model::Gpt& model, const parallel::Mesh& mesh) {
  std::map<std::string, torch::Tensor> out;
  for (const core::model::ParamInfo& p : model.params()) {
    out["model." + p.name] = my_part(assemble("model." + p.name, p.shard_dim, p.full_shape, m, files), p.shard_dim, mesh);
    // Optimizer fields of this parameter: elementwise ones (the saved shard's shape) split like it, the
    // step counter copied. A parameter that never stepped has none.
    const std::string prefix = "optim." + p.name + ".";
    std::map<std::string, bool> fields;
    for (const auto& [index, tensors] : files)
      for (auto it = tensors.lower_bound(prefix); it != tensors.end() && it->first.rfind(prefix, 0) == 0; ++it)
        fields[it->first] = true;
    for (const auto& [key, unused] : fields) {
      const bool scalar = key.substr(prefix.size()) == "step";
      out[key] = scalar ? assemble(key, -1, {}, m, files).clone()
                        : my_part(assemble(key, p.shard_dim, p.full_shape, m, files), p.shard_dim, mesh);
    }
  }
  // Linear states from saved tp rank 0 (equal on every tp rank); each layer's name is unique, so the pp stage
  // that held it does not matter. The adaptive precision rungs are in every shard (launch/precision_policy.h).
  for (const auto& [index, tensors] : files) {
    if (m.shards.at(index).tp_rank != 0) continue;
    for (const std::string prefix : {"linear.", "precision_policy."})
      for (auto it = tensors.lower_bound(prefix); it != tensors.end() && it->first.rfind(prefix, 0) == 0; ++it)
        out.emplace(it->first, it->second);
  }
  return out;
}

}  // namespace nibble::launch
