#include "launch/checkpoint_io.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "core/checkpoint/checkpoint_dir.h"
#include "core/checkpoint/checksum.h"
#include "core/checkpoint/linear_state_io.h"
#include "core/checkpoint/manifest.h"
#include "core/checkpoint/safetensors.h"
#include "core/checkpoint/safetensors_index.h"
#include "launch/checkpoint_reshard.h"
#include "launch/log.h"
#include "launch/precision_policy.h"
#include "parallel/runtime.h"
#include "precision/error.h"

namespace nibble::launch {
namespace {

std::string join(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (const std::string& s : items) out += (out.empty() ? "" : sep) + s;
  return out;
}

// Every rank learns whether every rank's part of a step of the save succeeded before any goes on.
void agree_or_throw(parallel::Communicator& world, const std::string& failure, const std::string& root,
                    int64_t step, const char* what) {
  int32_t bad = failure.empty() ? 0 : 1;
  world.all_reduce<int32_t>(std::span<int32_t>(&bad, 1), parallel::ReduceOp::kMax);
  if (!bad) return;
  if (world.rank() == 0) {
    std::error_code ec;  // best effort: the unfinished directory is never read (it is not step_<n> nor latest)
    std::filesystem::remove_all(core::checkpoint::temp_step_dir(root, step), ec);
  }
  throw CheckpointWriteError(
      !failure.empty() ? failure : "another rank could not " + std::string(what) + " (see its message)",
      !failure.empty());
}

}  // namespace

void save_checkpoint(const TrainConfig& config, const parallel::Mesh& mesh, core::model::Gpt& model,
                     TrainOptimizer& optimizer, const TrainingState& state, const PrecisionPolicy* policy) {
  parallel::Communicator& world = parallel::world();
  const std::string root = config.checkpoints();
  std::string failure;
  if (world.rank() == 0) {
    try {
      core::checkpoint::begin_checkpoint(root, state.step);
    } catch (const std::exception& e) {
      failure = std::string("checkpoint: could not create the step directory under '") + root + "': " + e.what();
    }
  }
  agree_or_throw(world, failure, root, state.step, "create the checkpoint directory");

  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& p : model.params()) tensors.emplace_back("model." + p.name, p.tensor.detach());
  for (const auto& [key, t] : optimizer.state_dict()) tensors.emplace_back("optim." + key, t);
  core::checkpoint::append_linear_states(model.linear_states(), tensors);
  if (policy) policy->append(tensors);
  const std::string shard =
      core::checkpoint::temp_step_dir(root, state.step) + "/" + core::checkpoint::shard_name(world.rank());
  int64_t mine[2] = {0, 0};
  try {
    core::checkpoint::write_safetensors(shard, tensors,
                                        {{"format", core::checkpoint::kManifestFormat},
                                         {"step", std::to_string(state.step)},
                                         {"rank", std::to_string(world.rank())},
                                         {"tp_rank", std::to_string(mesh.coord().tp)},
                                         {"cp_rank", std::to_string(mesh.coord().cp)},
                                         {"dp_rank", std::to_string(mesh.coord().dp)},
                                         {"pp_rank", std::to_string(mesh.coord().pp)}});
    // Each rank checks its own file; rank 0 records all of them.
    mine[0] = static_cast<int64_t>(std::filesystem::file_size(shard));
    mine[1] = static_cast<int64_t>(core::checkpoint::crc32_file(shard));
  } catch (const std::exception& e) {
    failure = "checkpoint: rank " + std::to_string(world.rank()) + " could not write its shard: " + e.what();
  }
  agree_or_throw(world, failure, root, state.step, "write its shard");
  std::vector<int64_t> all(2 * static_cast<size_t>(world.size()));
  world.all_gather<int64_t>(std::span<const int64_t>(mine, 2), std::span<int64_t>(all));

  if (world.rank() == 0) {
    try {
      core::checkpoint::Manifest m;
      m.step = state.step;
      m.consecutive_skips = state.consecutive_skips;
      m.skipped_total = state.skipped_total;
      m.recipe = config.model.recipe;
      m.layout = {config.tp, config.cp, config.dp, config.pp, config.virtual_stages, config.pp_layers,
                  config.pp_embedding_as_layer, config.pp_head_as_layer, world.size(), config.sequence_parallel};
      m.data_seed = config.data_seed;
      m.model_seed = config.model.seed;
      m.train_path = config.train_path;
      m.config = config.to_map();
      // (Rank 0's parameters; under pp the other stages' are in their shards, found by name when resharding.)
      for (const auto& p : model.params()) m.params.push_back({p.name, p.shard_dim, p.full_shape});
      for (int r = 0; r < world.size(); ++r) {
        const auto coord = parallel::coord_of(mesh.shape(), r);
        m.shards.push_back({core::checkpoint::shard_name(r), r, coord.tp, coord.cp, coord.dp, coord.pp,
                            static_cast<uint64_t>(all[2 * static_cast<size_t>(r)]),
                            static_cast<uint32_t>(all[2 * static_cast<size_t>(r) + 1])});
      }
      const std::string manifest = core::checkpoint::temp_step_dir(root, state.step) + "/manifest.json";
      std::ofstream out(manifest);
      out << core::checkpoint::manifest_json(m);
      out.close();
      if (!out)
        throw Error("could not write '" + manifest + "': " + std::strerror(errno));
      core::checkpoint::commit_checkpoint(root, state.step);
    } catch (const std::exception& e) {
      failure = std::string("checkpoint: rank 0 could not finish the checkpoint: ") + e.what();
    }
  }
  agree_or_throw(world, failure, root, state.step, "write the manifest");
}

namespace {

// What one rank read of a checkpoint directory after verifying it, or why it could not.
struct ReadCheckpoint {
  core::checkpoint::Manifest manifest;
  std::map<std::string, torch::Tensor> tensors;  // this rank's own shard (read or resharded)
  std::string source;
  bool resharded = false;
  std::string failure;
};

// A weights-only checkpoint (nibble-train import) records the model keys of the model it came from; the
// parameter shapes cannot tell every difference (model.heads, model.rope_theta, model.norm_eps change none of
// them), so each recorded key must equal this job's before any weight is used. Numbers compare as numbers
// ("1e-06" == "9.9999999999999995e-07"); model.ffn_hidden compares as the width the model builds (0 = default).
void check_weights_only_model(const core::checkpoint::Manifest& m, const TrainConfig& config) {
  const std::map<std::string, std::string> mine = config.to_map();
  for (const auto& [key, saved] : m.config) {
    if (key.rfind("model.", 0) != 0) continue;
    auto it = mine.find(key);
    if (it == mine.end())
      throw Error("the weights-only checkpoint records " + key + " = " + saved + ", which is not a config key");
    const std::string now = key == "model.ffn_hidden" ? std::to_string(config.model.ffn()) : it->second;
    bool same = saved == now;
    if (!same) {
      try {
        size_t a = 0, b = 0;
        same = std::stod(saved, &a) == std::stod(now, &b) && a == saved.size() && b == now.size();
      } catch (const std::exception&) {
        same = false;
      }
    }
    if (!same)
      throw Error("the weights-only checkpoint holds a model with " + key + " = " + saved + ", this job has " +
                  now + "; set --" + key + " " + saved + " (nibble-train import prints every model key to set)");
  }
}

ReadCheckpoint read_checkpoint(const std::string& dir, const TrainConfig& config, const parallel::Mesh& mesh,
                               core::model::Gpt& model) {
  ReadCheckpoint r;
  r.source = dir + "/" + core::checkpoint::shard_name(parallel::world().rank());
  try {
    r.manifest = core::checkpoint::read_manifest(dir);  // every field checked (core/checkpoint/manifest.h)
    const core::checkpoint::Manifest& m = r.manifest;
    r.resharded = !same_layout(m, config);
    if (m.contents == core::checkpoint::kContentsWeights) check_weights_only_model(m, config);
    // Verify every file this rank reads against the manifest before using any of it.
    auto read_verified = [&](size_t index) {
      const core::checkpoint::ManifestShard& shard = m.shards.at(index);
      const std::string path = dir + "/" + shard.file;
      core::checkpoint::verify_shard(path, shard.bytes, shard.crc32);
      return core::checkpoint::read_safetensors(path).tensors;
    };
    if (!r.resharded) {
      r.tensors = read_verified(static_cast<size_t>(parallel::world().rank()));
    } else {
      check_reshardable(m, config);
      // Each file a rank reads from is verified whole (size, CRC-32) by one rank, file k by rank k mod world:
      // the job reads each file once for that, where every rank used to read every dp-0 file. load_checkpoint
      // agrees on the verdicts before anything read here is used. Each rank then reads only the byte ranges
      // it needs (checkpoint_reshard.h).
      const std::vector<size_t> sources = reshard_sources(m);
      const int world_rank = parallel::world().rank(), world_size = parallel::world().size();
      for (size_t k = static_cast<size_t>(world_rank); k < sources.size(); k += static_cast<size_t>(world_size)) {
        const core::checkpoint::ManifestShard& shard = m.shards.at(sources[k]);
        core::checkpoint::verify_shard(dir + "/" + shard.file, shard.bytes, shard.crc32);
      }
      SavedShards saved;
      for (size_t i : sources) saved.emplace(i, core::checkpoint::SafetensorsIndex(dir + "/" + m.shards.at(i).file));
      r.source = dir + " (resharded from " + saved_layout(m) + ")";
      Resharded resharded = reshard(m, saved, model, mesh, config);
      r.tensors = std::move(resharded.tensors);
      for (const std::string& why : resharded.inexact)
        log_warning("checkpoint: rank " + std::to_string(world_rank) + " resharded the optimizer state of " + why);
      if (world_rank == 0) {
        uint64_t read = 0, total = 0;
        for (const auto& [index, f] : saved) {
          read += f.bytes_read();
          total += f.data_bytes();
        }
        std::printf("checkpoint: resharding read %llu of the %llu bytes in %zu saved shard files on rank 0\n",
                    static_cast<unsigned long long>(read), static_cast<unsigned long long>(total), saved.size());
      }
    }
  } catch (const std::exception& e) {
    r.failure = e.what();
  }
  return r;
}

void apply_checkpoint(const ReadCheckpoint& r, const TrainConfig& config, core::model::Gpt& model,
                      TrainOptimizer& optimizer, TrainingState& state, PrecisionPolicy* policy) {
  torch::NoGradGuard no_grad;
  for (const auto& p : model.params()) {
    auto it = r.tensors.find("model." + p.name);
    if (it == r.tensors.end() || !it->second.sizes().equals(p.tensor.sizes()))
      throw Error("checkpoint shard '" + r.source + "' has no tensor 'model." + p.name + "' of shape " +
                  c10::str(p.tensor.sizes()));
    p.tensor.copy_(it->second);
  }
  const core::checkpoint::Manifest& m = r.manifest;
  if (m.contents == core::checkpoint::kContentsWeights) {
    // Fresh optimizer (an empty state dict: moments start at zero; ZeRO-1 copies the loaded weights into its
    // shard) and fresh Linear states, as a new run has them.
    optimizer.load_state_dict({});
    if (parallel::world().rank() == 0)
      std::printf("checkpoint %s holds model weights only (manifest contents = \"weights\"): optimizer and "
                  "Linear states start fresh at step %lld\n",
                  r.source.c_str(), static_cast<long long>(m.step));
  } else {
    std::map<std::string, torch::Tensor> optim_state;
    for (const auto& [key, t] : r.tensors)
      if (key.rfind("optim.", 0) == 0) optim_state[key.substr(6)] = t;
    optimizer.load_state_dict(optim_state);
    if (policy) policy->restore(r.tensors, r.source, model);  // the recipes first: their states follow
    core::checkpoint::restore_linear_states(model.linear_states(), r.tensors, r.source);
  }
  state = {m.step, m.consecutive_skips, m.skipped_total};
  if (r.resharded && parallel::world().rank() == 0)
    std::printf("checkpoint resharded from %s to tp=%lld cp=%lld dp=%lld pp=%lld\n", saved_layout(m).c_str(),
                static_cast<long long>(config.tp), static_cast<long long>(config.cp),
                static_cast<long long>(config.dp), static_cast<long long>(config.pp));
}

}  // namespace

std::string load_checkpoint(const TrainConfig& config, const parallel::Mesh& mesh, core::model::Gpt& model,
                            TrainOptimizer& optimizer, TrainingState& state, PrecisionPolicy* policy) {
  parallel::Communicator& world = parallel::world();
  const bool fall_back = config.resume == "latest_valid";
  // Candidates in order: what `latest` names, then (latest_valid) every committed step, newest first.
  std::vector<std::string> candidates;
  const std::string latest = core::checkpoint::latest_checkpoint(config.checkpoints());
  if (!latest.empty()) candidates.push_back(latest);
  if (fall_back)
    for (const std::string& dir : core::checkpoint::committed_checkpoints(config.checkpoints()))
      if (std::find(candidates.begin(), candidates.end(), dir) == candidates.end()) candidates.push_back(dir);
  std::vector<std::string> skipped;
  for (const std::string& dir : candidates) {
    const ReadCheckpoint r = read_checkpoint(dir, config, mesh, model);
    // Agree before touching anything: one bad shard rejects the checkpoint on every rank.
    int32_t bad = r.failure.empty() ? 0 : 1;
    world.all_reduce<int32_t>(std::span<int32_t>(&bad, 1), parallel::ReduceOp::kMax);
    if (!bad) {
      apply_checkpoint(r, config, model, optimizer, state, policy);
      if (!skipped.empty() && world.rank() == 0)
        log_warning("checkpoint.resume = \"latest_valid\": resuming from " + dir + "; newer checkpoint(s) failed "
                    "verification and were skipped: " + join(skipped, ", "));
      return dir;
    }
    if (!fall_back) {
      if (!r.failure.empty()) throw Error(r.failure + "; the checkpoint was not loaded");
      throw Error("another rank's checkpoint shard failed verification (see its message); not loaded");
    }
    // Each rank that failed says why; rank 0 says what it does next.
    if (!r.failure.empty()) log_warning("checkpoint " + dir + " is not usable: " + r.failure);
    skipped.push_back(dir);
    if (world.rank() == 0)
      log_warning("checkpoint.resume = \"latest_valid\": " + dir + " failed verification" +
                  (r.failure.empty() ? " on another rank" : "") + "; trying the next older checkpoint");
  }
  if (!skipped.empty())
    throw Error("checkpoint.resume = \"latest_valid\": no checkpoint under '" + config.checkpoints() +
                "' verifies on every rank (tried " + join(skipped, ", ") + "); nothing was loaded");
  return "";
}

}  // namespace nibble::launch
