#include "launch/checkpoint_io.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/checkpoint/checkpoint_dir.h"
#include "core/checkpoint/checksum.h"
#include "core/checkpoint/linear_state_io.h"
#include "core/checkpoint/safetensors.h"
#include "parallel/runtime.h"
#include "precision/error.h"

namespace nibble::train {
namespace {

constexpr const char* kFormat = "nibble-checkpoint-1";

}  // namespace

void save_checkpoint(const TrainConfig& config, const parallel::Mesh& mesh, nn::Gpt& model,
                     optim::Optimizer& optimizer, const TrainingState& state) {
  parallel::Communicator& world = parallel::world();
  const std::string root = config.checkpoints();
  if (world.rank() == 0) checkpoint::begin_checkpoint(root, state.step);
  world.barrier();

  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& p : model.params()) tensors.emplace_back("model." + p.name, p.tensor.detach());
  for (const auto& [key, t] : optimizer.state_dict()) tensors.emplace_back("optim." + key, t);
  checkpoint::append_linear_states(model.linear_states(), tensors);
  const std::string shard = checkpoint::temp_step_dir(root, state.step) + "/" + checkpoint::shard_name(world.rank());
  checkpoint::write_safetensors(shard, tensors,
                                {{"format", kFormat},
                                 {"step", std::to_string(state.step)},
                                 {"rank", std::to_string(world.rank())},
                                 {"tp_rank", std::to_string(mesh.coord().tp)},
                                 {"dp_rank", std::to_string(mesh.coord().dp)}});
  // Each rank checks its own file; rank 0 records all of them.
  const int64_t mine[2] = {static_cast<int64_t>(std::filesystem::file_size(shard)),
                           static_cast<int64_t>(checkpoint::crc32_file(shard))};
  std::vector<int64_t> all(2 * static_cast<size_t>(world.size()));
  world.all_gather<int64_t>(std::span<const int64_t>(mine, 2), std::span<int64_t>(all));

  if (world.rank() == 0) {
    nlohmann::ordered_json m;
    m["format"] = kFormat;
    m["step"] = state.step;
    m["consecutive_skips"] = state.consecutive_skips;
    m["skipped_total"] = state.skipped_total;
    m["recipe"] = config.model.recipe;
    m["layout"] = {{"tp", config.tp}, {"dp", config.dp}, {"world_size", world.size()},
                   {"sequence_parallel", config.sequence_parallel}};
    // Training consumes no RNG stream: batches are a pure function of (data.seed, step), parameter init of
    // (model.seed, name), and stochastic rounding of the per-Linear counters stored in each shard.
    m["rng"] = {{"data_seed", config.data_seed}, {"model_seed", config.model.seed},
                {"linear_states", "linear.<layer>.sr_counter in each shard"}};
    m["data"] = {{"next_step", state.step}, {"train", config.train_path}};
    m["config"] = config.to_map();
    nlohmann::ordered_json params = nlohmann::ordered_json::array();
    for (const auto& p : model.params())
      params.push_back({{"name", p.name}, {"shard_dim", p.shard_dim}, {"full_shape", p.full_shape}});
    m["params"] = params;
    nlohmann::ordered_json shards = nlohmann::ordered_json::array();
    for (int r = 0; r < world.size(); ++r) {
      const auto coord = parallel::coord_of(mesh.shape(), r);
      shards.push_back({{"file", checkpoint::shard_name(r)}, {"rank", r}, {"tp_rank", coord.tp},
                        {"dp_rank", coord.dp}, {"bytes", all[2 * static_cast<size_t>(r)]},
                        {"crc32", all[2 * static_cast<size_t>(r) + 1]}});
    }
    m["shards"] = shards;
    const std::string manifest = checkpoint::temp_step_dir(root, state.step) + "/manifest.json";
    std::ofstream(manifest) << m.dump(2) << "\n";
    checkpoint::commit_checkpoint(root, state.step);
  }
  world.barrier();
}

bool load_checkpoint(const TrainConfig& config, const parallel::Mesh& mesh, nn::Gpt& model,
                     optim::Optimizer& optimizer, TrainingState& state) {
  parallel::Communicator& world = parallel::world();
  const std::string dir = checkpoint::latest_checkpoint(config.checkpoints());
  if (dir.empty()) return false;
  std::string failure;
  nlohmann::json m;
  checkpoint::SafetensorsFile shard;
  const std::string path = dir + "/" + checkpoint::shard_name(world.rank());
  try {
    std::ifstream in(dir + "/manifest.json");
    if (!in) throw Error("checkpoint '" + dir + "' has no manifest.json");
    m = nlohmann::json::parse(in);
    if (m.at("format") != kFormat) throw Error("checkpoint '" + dir + "' has format " + m.at("format").dump());
    const auto& layout = m.at("layout");
    if (layout.at("tp") != config.tp || layout.at("dp") != config.dp)
      throw Error("checkpoint '" + dir + "' was written at tp=" + layout.at("tp").dump() + " dp=" +
                  layout.at("dp").dump() + "; this job runs tp=" + std::to_string(config.tp) + " dp=" +
                  std::to_string(config.dp) + " (loading into another layout is not implemented yet)");
    const auto& rec = m.at("shards").at(static_cast<size_t>(world.rank()));
    checkpoint::verify_shard(path, rec.at("bytes").get<uint64_t>(), rec.at("crc32").get<uint32_t>());
    shard = checkpoint::read_safetensors(path);
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
    auto it = shard.tensors.find("model." + p.name);
    if (it == shard.tensors.end() || !it->second.sizes().equals(p.tensor.sizes()))
      throw Error("checkpoint shard '" + path + "' has no tensor 'model." + p.name + "' of shape " +
                  c10::str(p.tensor.sizes()));
    p.tensor.copy_(it->second);
  }
  std::map<std::string, torch::Tensor> optim_state;
  for (const auto& [key, t] : shard.tensors)
    if (key.rfind("optim.", 0) == 0) optim_state[key.substr(6)] = t;
  optimizer.load_state_dict(optim_state);
  checkpoint::restore_linear_states(model.linear_states(), shard.tensors, path);
  state.step = m.at("step").get<int64_t>();
  state.consecutive_skips = m.at("consecutive_skips").get<int64_t>();
  state.skipped_total = m.at("skipped_total").get<int64_t>();
  (void)mesh;
  return true;
}

}  // namespace nibble::train
