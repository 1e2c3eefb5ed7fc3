#include "launch/checkpoint_reshard.h"

#include "precision/error.h"

namespace nibble::launch {
namespace {

int64_t layout_value(const nlohmann::json& layout, const char* key) {
  return layout.contains(key) ? layout.at(key).get<int64_t>() : 1;
}

int shard_coord(const nlohmann::json& shard, const char* key) {
  return shard.contains(key) ? shard.at(key).get<int>() : 0;
}

// The saved tensor `key` assembled over the saved tp ranks: pieces[t] from a file of tp rank t (any pp).
// shard_dim < 0: the value of any of them (replicated).
torch::Tensor assemble(const std::string& key, int shard_dim, const std::vector<int64_t>& full_shape,
                       const nlohmann::json& manifest, const std::map<size_t, std::map<std::string, torch::Tensor>>& files) {
  const int64_t saved_tp = layout_value(manifest.at("layout"), "tp");
  std::vector<torch::Tensor> pieces(static_cast<size_t>(saved_tp));
  for (const auto& [index, tensors] : files) {
    auto it = tensors.find(key);
    if (it == tensors.end()) continue;
    const int t = shard_coord(manifest.at("shards").at(index), "tp_rank");
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

std::string saved_layout(const nlohmann::json& m) {
  const auto& l = m.at("layout");
  return "tp=" + std::to_string(layout_value(l, "tp")) + " cp=" + std::to_string(layout_value(l, "cp")) +
         " dp=" + std::to_string(layout_value(l, "dp")) + " pp=" + std::to_string(layout_value(l, "pp")) +
         (layout_value(l, "pp") > 1 && l.contains("pp_layers")
              ? " (" + std::to_string(layout_value(l, "virtual_stages")) + " virtual stages, split '" +
                    l.at("pp_layers").get<std::string>() + "'" +
                    (l.value("pp_embedding_as_layer", false) ? ", embedding as a layer" : "") +
                    (l.value("pp_head_as_layer", false) ? ", head as a layer" : "") + ")"
              : "");
}

bool same_layout(const nlohmann::json& m, const TrainConfig& c) {
  const auto& l = m.at("layout");
  const std::string split = l.contains("pp_layers") ? l.at("pp_layers").get<std::string>() : "";
  // Manifests written before the end-stage flags existed split evenly without them.
  auto flag = [&l](const char* key) { return l.contains(key) && l.at(key).get<bool>(); };
  return layout_value(l, "tp") == c.tp && layout_value(l, "dp") == c.dp && layout_value(l, "cp") == c.cp &&
         layout_value(l, "pp") == c.pp && layout_value(l, "virtual_stages") == c.virtual_stages &&
         split == c.pp_layers && flag("pp_embedding_as_layer") == c.pp_embedding_as_layer &&
         flag("pp_head_as_layer") == c.pp_head_as_layer;
}

std::vector<size_t> reshard_sources(const nlohmann::json& m) {
  std::vector<size_t> out;
  const auto& shards = m.at("shards");
  for (size_t i = 0; i < shards.size(); ++i)
    if (shard_coord(shards[i], "dp_rank") == 0 && shard_coord(shards[i], "cp_rank") == 0) out.push_back(i);
  return out;
}

void check_reshardable(const nlohmann::json& m, const TrainConfig& c) {
  const auto& saved = m.at("config");
  const std::string saved_zero = saved.contains("optim.zero") ? saved.at("optim.zero").get<std::string>() : "0";
  if (saved_zero != "0" || c.zero != 0)
    throw Error("resharding a checkpoint from " + saved_layout(m) + " with ZeRO-1 optimizer states (optim.zero = " +
                saved_zero + " saved, " + std::to_string(c.zero) + " now) is not implemented: each dp rank's file "
                "holds only its shard of the states. Resume at the saved layout with the same optim.zero");
  const std::string state = saved.contains("optim.state") ? saved.at("optim.state").get<std::string>() : "fp32";
  if (state != c.state)
    throw Error("the checkpoint's optimizer states are '" + state + "', this job's optim.state is '" + c.state +
                "'; resume with optim.state = " + state);
  if (state != "fp32" && state != "bf16")
    throw Error("resharding a checkpoint from " + saved_layout(m) + " to tp=" + std::to_string(c.tp) + " cp=" +
                std::to_string(c.cp) + " dp=" + std::to_string(c.dp) + " pp=" + std::to_string(c.pp) +
                " is not possible with optim.state = " + state + ": its per-group scales span the flattened "
                "tensor and a new split would cut through them. Resume at the saved layout, or train with "
                "optim.state = fp32 or bf16 (elementwise states reshard exactly)");
  for (const char* key : {"model.vocab", "model.hidden", "model.layers", "model.heads", "model.ffn_hidden",
                          "model.tie_embeddings"})
    if (saved.contains(key) && saved.at(key).get<std::string>() != c.to_map().at(key))
      throw Error(std::string("the checkpoint was written with ") + key + " = " + saved.at(key).get<std::string>() +
                  ", this job has " + c.to_map().at(key) + ": not the same model");
}

std::map<std::string, torch::Tensor> reshard(const nlohmann::json& m,
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
  // that held it does not matter.
  for (const auto& [index, tensors] : files) {
    if (shard_coord(m.at("shards").at(index), "tp_rank") != 0) continue;
    for (auto it = tensors.lower_bound("linear."); it != tensors.end() && it->first.rfind("linear.", 0) == 0; ++it)
      out.emplace(it->first, it->second);
  }
  return out;
}

}  // namespace nibble::launch
