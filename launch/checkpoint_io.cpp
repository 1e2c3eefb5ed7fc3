#include "launch/checkpoint_io.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/checkpoint/checkpoint_dir.h"
#include "core/checkpoint/checksum.h"
#include "core/checkpoint/linear_state_io.h"
#include "core/checkpoint/safetensors.h"
#include "launch/checkpoint_reshard.h"
#include "parallel/runtime.h"
#include "precision/error.h"

namespace nibble::launch {
namespace {

constexpr const char* kFormat = "nibble-checkpoint-1";

}  // namespace

void save_checkpoint(const TrainConfig& config, const parallel::Mesh& mesh, core::model::Gpt& model,
                     TrainOptimizer& optimizer, const TrainingState& state) {
  parallel::Communicator& world = parallel::world();
  const std::string root = config.checkpoints();
  if (world.rank() == 0) core::checkpoint::begin_checkpoint(root, state.step);
  world.barrier();

  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& p : model.params()) tensors.emplace_back("model." + p.name, p.tensor.detach());
  for (const auto& [key, t] : optimizer.state_dict()) tensors.emplace_back("optim." + key, t);
  core::checkpoint::append_linear_states(model.linear_states(), tensors);
  const std::string shard =
      core::checkpoint::temp_step_dir(root, state.step) + "/" + core::checkpoint::shard_name(world.rank());
  core::checkpoint::write_safetensors(shard, tensors,
                                      {{"format", kFormat},
                                       {"step", std::to_string(state.step)},
                                       {"rank", std::to_string(world.rank())},
                                       {"tp_rank", std::to_string(mesh.coord().tp)},
                                       {"cp_rank", std::to_string(mesh.coord().cp)},
                                       {"dp_rank", std::to_string(mesh.coord().dp)},
                                       {"pp_rank", std::to_string(mesh.coord().pp)}});
  // Each rank checks its own file; rank 0 records all of them.
  const int64_t mine[2] = {static_cast<int64_t>(std::filesystem::file_size(shard)),
                           static_cast<int64_t>(core::checkpoint::crc32_file(shard))};
  std::vector<int64_t> all(2 * static_cast<size_t>(world.size()));
  world.all_gather<int64_t>(std::span<const int64_t>(mine, 2), std::span<int64_t>(all));

  if (world.rank() == 0) {
    nlohmann::ordered_json m;
    m["format"] = kFormat;
    m["step"] = state.step;
    m["consecutive_skips"] = state.consecutive_skips;
    m["skipped_total"] = state.skipped_total;
    m["recipe"] = config.model.recipe;
    m["layout"] = {{"tp", config.tp}, {"cp", config.cp}, {"dp", config.dp}, {"pp", config.pp},
                   {"virtual_stages", config.virtual_stages}, {"pp_layers", config.pp_layers},
                   {"pp_embedding_as_layer", config.pp_embedding_as_layer},
                   {"pp_head_as_layer", config.pp_head_as_layer},
                   {"world_size", world.size()}, {"sequence_parallel", config.sequence_parallel}};
    // Training consumes no RNG stream: batches are a pure function of (data.seed, step), parameter init of
    // (model.seed, name), and stochastic rounding of the per-Linear counters stored in each shard.
    m["rng"] = {{"data_seed", config.data_seed}, {"model_seed", config.model.seed},
                {"linear_states", "linear.<layer>.sr_counter in each shard"}};
    m["data"] = {{"next_step", state.step}, {"train", config.train_path}};
    m["config"] = config.to_map();
    // (Rank 0's parameters; under pp the other stages' are in their shards, found by name when resharding.)
    nlohmann::ordered_json params = nlohmann::ordered_json::array();
    for (const auto& p : model.params())
      params.push_back({{"name", p.name}, {"shard_dim", p.shard_dim}, {"full_shape", p.full_shape}});
    m["params"] = params;
    nlohmann::ordered_json shards = nlohmann::ordered_json::array();
    for (int r = 0; r < world.size(); ++r) {
      const auto coord = parallel::coord_of(mesh.shape(), r);
      shards.push_back({{"file", core::checkpoint::shard_name(r)},
                        {"rank", r},
                        {"tp_rank", coord.tp},
                        {"cp_rank", coord.cp},
                        {"dp_rank", coord.dp},
                        {"pp_rank", coord.pp},
                        {"bytes", all[2 * static_cast<size_t>(r)]},
                        {"crc32", all[2 * static_cast<size_t>(r) + 1]}});
    }
    m["shards"] = shards;
    const std::string manifest = core::checkpoint::temp_step_dir(root, state.step) + "/manifest.json";
    std::ofstream(manifest) << m.dump(2) << "\n";
    core::checkpoint::commit_checkpoint(root, state.step);
  }
  world.barrier();
}

bool load_checkpoint(const TrainConfig& config, const parallel::Mesh& mesh, core::model::Gpt& model,
                     TrainOptimizer& optimizer, TrainingState& state) {
  parallel::Communicator& world = parallel::world();
  const std::string dir = core::checkpoint::latest_checkpoint(config.checkpoints());
  if (dir.empty()) return false;
  std::string failure;
  nlohmann::json m;
  bool resharded = false;
  std::string source = dir + "/" + core::checkpoint::shard_name(world.rank());
  std::map<std::string, torch::Tensor> tensors;  // what this rank's own shard holds (read or resharded)
  try {
    std::ifstream in(dir + "/manifest.json");
    if (!in) throw Error("checkpoint '" + dir + "' has no manifest.json");
    m = nlohmann::json::parse(in);
    if (m.at("format") != kFormat) throw Error("checkpoint '" + dir + "' has format " + m.at("format").dump());
    resharded = !same_layout(m, config);
    // Verify every file this rank reads against the manifest before using any of it.
    auto read_verified = [&](size_t index) {
      const auto& rec = m.at("shards").at(index);
      const std::string path = dir + "/" + rec.at("file").get<std::string>();
      core::checkpoint::verify_shard(path, rec.at("bytes").get<uint64_t>(), rec.at("crc32").get<uint32_t>());
      return core::checkpoint::read_safetensors(path).tensors;
    };
    if (!resharded) {
      tensors = read_verified(static_cast<size_t>(world.rank()));
    } else {
      check_reshardable(m, config);
      std::map<size_t, std::map<std::string, torch::Tensor>> files;
      for (size_t i : reshard_sources(m)) files[i] = read_verified(i);
      source = dir + " (resharded from " + saved_layout(m) + ")";
      tensors = reshard(m, files, model, mesh);
    }
  } catch (const std::exception& e) {
    failure = e.what();
  }
  // Agree before touching anything: one bad shard stops every rank.
  int32_t bad = failure.empty() ? 0 : 1;
  world.all_reduce<int32_t>(std::span<int32_t>(&bad, 1), parallel::ReduceOp::kMax);
  if (!failure.empty()) throw Error(failure + "; the checkpoint was not loaded");
  if (bad) throw Error("another rank's checkpoint shard failed verification (see its message); not loaded");

  torch::NoGradGuard no_grad;
  for (const auto& p : model.params()) {
    auto it = tensors.find("model." + p.name);
    if (it == tensors.end() || !it->second.sizes().equals(p.tensor.sizes()))
      throw Error("checkpoint shard '" + source + "' has no tensor 'model." + p.name + "' of shape " +
                  c10::str(p.tensor.sizes()));
    p.tensor.copy_(it->second);
  }
  std::map<std::string, torch::Tensor> optim_state;
  for (const auto& [key, t] : tensors)
    if (key.rfind("optim.", 0) == 0) optim_state[key.substr(6)] = t;
  optimizer.load_state_dict(optim_state);
  core::checkpoint::restore_linear_states(model.linear_states(), tensors, source);
  state.step = m.at("step").get<int64_t>();
  state.consecutive_skips = m.at("consecutive_skips").get<int64_t>();
  state.skipped_total = m.at("skipped_total").get<int64_t>();
  if (resharded && world.rank() == 0)
    std::printf("checkpoint resharded from %s to tp=%lld cp=%lld dp=%lld pp=%lld\n", saved_layout(m).c_str(),
                static_cast<long long>(config.tp), static_cast<long long>(config.cp),
                static_cast<long long>(config.dp), static_cast<long long>(config.pp));
  return true;
}

}  // namespace nibble::launch
