#pragma once
// The nibble-train configuration: a TOML file ([model], [data], [train], [optim], [parallel], [checkpoint])
// plus `--section.key value` overrides. Every key is known, typed and checked here, before any rank
// allocates memory or talks to another rank; a mistake is one InvalidArgument naming the key, the value and
// what would be valid.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/model/gpt_config.h"

namespace nibble::optim {
struct OptimizerConfig;  // optim/torch/optimizer.h
}

namespace nibble::launch {

struct TrainConfig {
  core::model::GptConfig model;
  // [data]
  std::string train_path = "data/tokens/train.bin", val_path = "data/tokens/val.bin";
  uint64_t data_seed = 0;
  // [train]
  int64_t steps = 100, global_batch = 16, micro_batch = 16;
  int64_t eval_every = 0, eval_batches = 4;  // eval_every 0: only at the end
  int64_t max_nonfinite = 3;                 // stop after this many consecutive skipped steps
  int64_t stats_every = 0;  // quantization statistics to <out_dir>/stats.jsonl every N steps; 0: off
  int64_t sample_tokens = 200;
  std::string sample_prompt = "In the beginning";
  double sample_temperature = 0.8;
  std::string out_dir = "runs/default";
  int64_t threads = 0;  // torch intra-op threads per rank; 0 = the cores this rank has (parallel::cores_per_rank)
  std::string device = "auto";  // auto | cuda | cpu (launch/device_choice.h)
  // [optim]
  std::string optimizer = "adamw", state = "fp32", schedule = "cosine";
  double lr = 3e-3, min_lr_ratio = 0.1, weight_decay = 0.0, beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double grad_clip = 1.0;  // 0: off
  int64_t warmup = 0;
  int64_t zero = 0;                  // 1: ZeRO-1, optimizer states sharded over dp x cp
  bool zero_fp8_all_gather = false;  // ZeRO-1: all-gather the updated parameters as FP8 (E4M3 + 1/128 scales)
  // [parallel]
  int64_t tp = 1, dp = 1, pp = 1, cp = 1;
  bool sequence_parallel = false;
  double timeout_s = 300.0;  // deadline of every collective: a rank that does not arrive in time fails the job
  // Every GEMM and the cross-entropy sum in FP64 (GptConfig::reproducible_sums, core/gemm.h), so tp/sp splits of a sum
  // round to the single-rank result: layout-invariant loss curves at the cost of GEMM speed.
  bool reproducible_sums = false;
  std::string pp_schedule = "1f1b";  // gpipe | 1f1b | interleaved
  int64_t virtual_stages = 1;        // model chunks per pp rank (> 1 only with interleaved)
  std::string pp_layers;             // "" = even split; else comma-separated layers per virtual stage
  // Even split only: count the embedding (first stage) / final norm + LM head + loss (last stage) as one
  // transformer layer, so that stage gets a layer fewer (Megatron's
  // account_for_{embedding,loss}_in_pipeline_split).
  bool pp_embedding_as_layer = false, pp_head_as_layer = false;
  std::string cp_method = "ring";    // ring | ulysses
  // The dp x cp gradient reduction in buckets started from backward (launch/grad_overlap.h) instead of one
  // all-reduce after it; grad_bucket_mb is the buckets' size (MB of FP32 gradient), ZeRO-1's included.
  bool overlap_grad_reduce = true;
  double grad_bucket_mb = 25.0;
  // [checkpoint]
  std::string checkpoint_dir;  // "" = <out_dir>/checkpoints
  int64_t checkpoint_every = 0;  // 0: only at the end
  // "false" | "true" (= "latest": the checkpoint `latest` names; a broken one stops the job) | "latest_valid"
  // (the newest checkpoint that verifies, saying which were skipped and why). A TOML boolean is accepted.
  std::string resume = "false";
  // A checkpoint that cannot be written (disk full, a file-size limit): "stop" ends the job (exit 4) after
  // saying so, "continue" keeps training; either way the previous checkpoint and `latest` are untouched.
  std::string checkpoint_on_error = "stop";
  bool resuming() const { return resume != "false"; }

  // Every key as "section.key" -> its value as TOML text (the manifest records this).
  std::map<std::string, std::string> to_map() const;
  std::vector<int64_t> pp_layer_counts() const;  // pp_layers parsed ("" -> empty)
  std::string checkpoints() const { return checkpoint_dir.empty() ? out_dir + "/checkpoints" : checkpoint_dir; }
};

// Parses the TOML file (if path is not empty) then applies overrides ("section.key" -> text), checking every
// key and type. Then validate(world_size).
TrainConfig load_config(const std::string& path, const std::vector<std::pair<std::string, std::string>>& overrides);
// The same from TOML text (Python's nibble.models writes a dict of keys as TOML, so a dict is checked exactly as a
// file is); `where` names the source in messages, as "config 'PATH'" does for a file.
TrainConfig load_config_text(const std::string& toml_text, const std::string& where);

// Every config key with its type ("integer", "number", "string", "boolean", "boolean or string") and default
// (`nibble-train keys` prints them; tests/python/test_config_rules.py requires a failing case for each).
struct ConfigKeyInfo {
  std::string key, type, default_value;
};
std::vector<ConfigKeyInfo> config_schema();
// The cross-key rules: model sizes, layout (tp * cp * dp * pp == world_size, tp divides heads/ffn/vocab,
// 2 * cp divides seq_len, the pipeline split and schedule), batch divisibility, ranges.
void validate(const TrainConfig& config, int64_t world_size);
// A number as configs and messages show it (17 significant digits: the value round-trips).
std::string format_config_number(double v);
// The [optim] keys as the optimizer's config (seeded by model.seed); validate() checks it.
optim::OptimizerConfig optimizer_config(const TrainConfig& config);
// All valid keys, "section.key", sorted (for messages and --help).
std::vector<std::string> config_keys();

}  // namespace nibble::launch
