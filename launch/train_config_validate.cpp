// validate(): every rule a config must pass before any rank starts, named by key, value and what is valid
// (tests/python/test_config_rules.py has a failing case for each key). Parsing and types are train_config.cpp's.
#include <cerrno>
#include <cstring>
#include <fstream>

#include "core/data/tokenizer.h"
#include "launch/model_layout.h"
#include "launch/train_config.h"
#include "optim/lr_schedule.h"
#include "optim/torch/optimizer.h"
#include "parallel/mesh.h"
#include "parallel/pipeline_schedule.h"
#include "precision/error.h"

namespace nibble::launch {
namespace {

void require(bool ok, const std::string& key, const std::string& value, const std::string& valid) {
  if (!ok) throw InvalidArgument(key + " = " + value + " is invalid: " + valid);
}

std::string fmt_double(double v) { return format_config_number(v); }

}  // namespace

void validate(const TrainConfig& c, int64_t world_size) {
  c.model.validate();
  require(c.steps >= 1, "train.steps", std::to_string(c.steps), "must be >= 1");
  require(c.global_batch >= 1, "train.global_batch", std::to_string(c.global_batch), "must be >= 1");
  require(c.micro_batch >= 1, "train.micro_batch", std::to_string(c.micro_batch), "must be >= 1");
  require(c.stats_every >= 0, "train.stats_every", std::to_string(c.stats_every),
          "must be >= 0 (0 = no quantization statistics)");
  // The adaptive policy decides from those statistics: without them it could react to non-finite gradients only.
  require(c.model.precision_policy != "adaptive" || c.stats_every > 0, "train.stats_every",
          std::to_string(c.stats_every),
          "must be > 0 with model.precision_policy = \"adaptive\" (it decides from the statistics measured every "
          "train.stats_every steps)");
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
  // NaN fails the comparison too. The upper end only catches a unit mistake (bytes given as MB).
  require(c.grad_bucket_mb > 0 && c.grad_bucket_mb <= 65536, "parallel.grad_bucket_mb", std::to_string(c.grad_bucket_mb),
          "must be in (0, 65536] (MB of FP32 gradient per bucket of the dp x cp reduction)");
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
