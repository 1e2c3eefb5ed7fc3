#include "launch/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/data/batch_sampler.h"
#include "core/data/byte_tokenizer.h"
#include "core/model/gpt.h"
#include "core/model/single_rank_tensor_parallel.h"
#include "launch/checkpoint_io.h"
#include "optim/lr_schedule.h"
#include "optim/torch/optimizer.h"
#include "parallel/mesh.h"
#include "parallel/runtime.h"
#include "precision/error.h"
#if NIBBLE_HAVE_PARALLEL_NN
#include "parallel/nn/tensor_parallel.h"
#endif

namespace nibble::train {
namespace {

using Clock = std::chrono::steady_clock;

double peak_memory_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // Linux reports KiB
}

std::shared_ptr<nn::TensorParallel> make_tensor_parallel(const TrainConfig& c, const parallel::Mesh& mesh) {
  if (c.tp == 1 && !c.sequence_parallel) return std::make_shared<nn::SingleRankTensorParallel>();
#if NIBBLE_HAVE_PARALLEL_NN
  return std::make_shared<parallel::GroupTensorParallel>(mesh.tp(), c.sequence_parallel);
#else
  (void)mesh;
  throw InvalidArgument("parallel.tp = " + std::to_string(c.tp) +
                        " needs the tensor-parallel layers (parallel/nn), which this build does not have");
#endif
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

// Plain data parallelism: average every gradient over the dp group in one flat FP32 all-reduce (a fixed
// order, so every dp rank holds bit-identical gradients and parameters). parallel/nn/grad_buckets.h is the
// overlapped, bucketed version for larger models.
void average_over_dp(nn::Gpt& model, parallel::Communicator& dp) {
  if (dp.size() == 1) return;
  std::vector<torch::Tensor> grads;
  for (const auto& p : model.params()) {
    if (!p.tensor.grad().defined()) p.tensor.mutable_grad() = torch::zeros_like(p.tensor);
    grads.push_back(p.tensor.grad().reshape({-1}));
  }
  torch::Tensor flat = torch::cat(grads).contiguous();
  dp.all_reduce<float>(std::span<float>(flat.data_ptr<float>(), static_cast<size_t>(flat.numel())),
                       parallel::ReduceOp::kSum);
  flat.div_(static_cast<double>(dp.size()));
  int64_t offset = 0;
  for (const auto& p : model.params()) {
    p.tensor.mutable_grad().copy_(flat.narrow(0, offset, p.tensor.numel()).view_as(p.tensor));
    offset += p.tensor.numel();
  }
}

// The global gradient norm: sharded parameters summed over tp, replicated ones counted once.
double global_grad_norm(const nn::Gpt& model, parallel::Communicator& tp) {
  double sharded = 0.0, replicated = 0.0;
  for (const auto& p : model.params()) {
    if (!p.tensor.grad().defined()) continue;
    const double sq = p.tensor.grad().to(torch::kFloat64).square().sum().item<double>();
    (p.shard_dim >= 0 ? sharded : replicated) += sq;
  }
  if (tp.size() > 1) tp.all_reduce<double>(std::span<double>(&sharded, 1), parallel::ReduceOp::kSum);
  return std::sqrt(sharded + replicated);
}

double mean_over(parallel::Communicator& group, double value) {
  if (group.size() > 1) group.all_reduce<double>(std::span<double>(&value, 1), parallel::ReduceOp::kSum);
  return value / group.size();
}

double evaluate(const TrainConfig& c, nn::Gpt& model, const data::BatchSampler& val, const parallel::Mesh& mesh) {
  torch::NoGradGuard no_grad;
  const int64_t per_dp = c.global_batch / c.dp;
  double sum = 0.0;
  int64_t chunks = 0;
  for (int64_t e = 0; e < c.eval_batches; ++e)
    for (int64_t first = 0; first < per_dp; first += c.micro_batch) {
      const int64_t count = std::min(c.micro_batch, per_dp - first);
      data::Batch b = val.eval_batch(e, c.global_batch, mesh.coord().dp * per_dp + first, count);
      sum += model.loss(b.tokens, b.targets).item<double>();
      ++chunks;
    }
  return mean_over(mesh.dp(), sum / static_cast<double>(chunks));
}

// Autoregressive sampling, in lockstep on every rank (the forward is collective under tp): the vocabulary
// slices are gathered over tp and every rank draws with the same seeded generator, so all agree.
std::string sample(const TrainConfig& c, nn::Gpt& model, const parallel::Mesh& mesh) {
  torch::NoGradGuard no_grad;
  std::vector<int64_t> ids;
  for (uint16_t t : data::byte_encode(c.sample_prompt)) ids.push_back(t);
  if (ids.empty()) ids.push_back('\n');
  auto gen = at::make_generator<at::CPUGeneratorImpl>(c.data_seed + 1);
  const int64_t seq = c.model.seq_len;
  for (int64_t i = 0; i < c.sample_tokens; ++i) {
    std::vector<int64_t> window(ids.end() - std::min<int64_t>(seq, static_cast<int64_t>(ids.size())), ids.end());
    // Sequence parallel splits the tokens over tp: pad on the left to a whole window.
    if (c.sequence_parallel) window.insert(window.begin(), static_cast<size_t>(seq) - window.size(), '\n');
    torch::Tensor tokens = torch::tensor(window, torch::kInt64).view({1, -1});
    torch::Tensor shard = model.logits(tokens).select(0, -1).contiguous().to(torch::kFloat32);
    torch::Tensor full = torch::empty({shard.numel() * mesh.tp().size()}, torch::kFloat32);
    if (mesh.tp().size() > 1) {
      mesh.tp().all_gather<float>(std::span<const float>(shard.data_ptr<float>(), static_cast<size_t>(shard.numel())),
                                  std::span<float>(full.data_ptr<float>(), static_cast<size_t>(full.numel())));
    } else {
      full = shard;
    }
    torch::Tensor probs = torch::softmax(full.to(torch::kFloat64) / c.sample_temperature, -1);
    ids.push_back(torch::multinomial(probs, 1, false, gen).item<int64_t>());
  }
  std::string text = data::byte_decode(ids);
  // An undertrained byte model emits stray bytes: keep the printed sample valid ASCII text.
  for (char& ch : text)
    if (static_cast<unsigned char>(ch) >= 0x80 || (static_cast<unsigned char>(ch) < 0x20 && ch != '\n')) ch = '?';
  return text;
}

}  // namespace

int run_training(const TrainConfig& c) {
  const auto& info = parallel::init();
  torch::set_num_threads(static_cast<int>(c.threads > 0 ? c.threads : std::max(1, 2 / info.local_size)));
  const bool lead = info.rank == 0;
  parallel::MeshShape shape;
  shape.tp = static_cast<int>(c.tp);
  shape.dp = static_cast<int>(c.dp);
  parallel::Mesh mesh(shape);
  data::TokenFile train_file(c.train_path), val_file(c.val_path);
  for (const auto* f : {&train_file, &val_file})
    for (int64_t i = 0; i < std::min<int64_t>(f->size(), 4096); ++i)
      if (f->data()[i] >= c.model.vocab)
        throw InvalidArgument("token file '" + f->path() + "' holds id " + std::to_string(f->data()[i]) +
                              " >= model.vocab = " + std::to_string(c.model.vocab));
  const data::BatchSampler train_data(train_file, c.model.seq_len, c.data_seed);
  const data::BatchSampler val_data(val_file, c.model.seq_len, c.data_seed);

  nn::Gpt model(c.model, make_tensor_parallel(c, mesh));
  optim::Optimizer optimizer(model.named_parameters(), optimizer_config(c));
  const optim::LrSchedule schedule = optim::make_lr_schedule(c.schedule, c.warmup, c.steps, c.min_lr_ratio);

  TrainingState state;
  if (c.resume && load_checkpoint(c, mesh, model, optimizer, state) && lead)
    std::printf("resumed from %s at step %lld\n", c.checkpoints().c_str(), static_cast<long long>(state.step));

  int64_t params = 0;
  for (const auto& p : model.params()) params += p.tensor.numel();
  std::ofstream metrics;
  if (lead) {
    std::filesystem::create_directories(c.out_dir);
    metrics.open(c.out_dir + "/metrics.jsonl", state.step > 0 ? std::ios::app : std::ios::trunc);
    std::printf("nibble-train: %lld parameters on rank 0 (%lld layers, hidden %lld, %lld heads), recipe %s "
                "(bf16 first %lld / last %lld), %s; world %d: %s; %lld steps of %lld x %lld tokens "
                "(micro-batch %lld)\n",
                static_cast<long long>(params), static_cast<long long>(c.model.layers),
                static_cast<long long>(c.model.hidden), static_cast<long long>(c.model.heads), c.model.recipe.c_str(),
                static_cast<long long>(c.model.bf16_first), static_cast<long long>(c.model.bf16_last),
                ("optimizer " + c.optimizer + " (" + c.state + " states)").c_str(), info.world_size,
                mesh.shape().str().c_str(), static_cast<long long>(c.steps), static_cast<long long>(c.global_batch),
                static_cast<long long>(c.model.seq_len), static_cast<long long>(c.micro_batch));
    std::fflush(stdout);
  }
  auto write_metrics = [&](const nlohmann::ordered_json& j) {
    if (!lead) return;
    metrics << j.dump() << "\n";
    metrics.flush();
  };

  const int64_t per_dp = c.global_batch / c.dp, micro_steps = per_dp / c.micro_batch;
  const int64_t tokens_per_step = c.global_batch * c.model.seq_len;
  double first_loss = NAN, last_loss = NAN, total_seconds = 0.0;
  int64_t last_saved = state.step > 0 ? state.step : -1;
  double eval_loss = NAN;
  const int64_t start_step = state.step;
  while (state.step < c.steps) {
    const int64_t step = state.step;  // 0-based index of this update
    parallel::set_step(step + 1);
    const auto t0 = Clock::now();
    model.zero_grad();
    double loss_sum = 0.0;
    for (int64_t m = 0; m < micro_steps; ++m) {
      data::Batch b = train_data.train_batch(step, mesh.coord().dp * per_dp + m * c.micro_batch, c.micro_batch);
      torch::Tensor loss = model.loss(b.tokens, b.targets);
      (loss / static_cast<double>(micro_steps)).backward();
      loss_sum += loss.item<double>();
    }
    model.tensor_parallel().all_reduce_replicated_grads(model.replicated_parameters());
    average_over_dp(model, mesh.dp());
    const double loss = mean_over(mesh.dp(), loss_sum / static_cast<double>(micro_steps));

    // NaN/Inf policy: every rank must agree to skip (tp ranks hold different shards).
    const std::string bad_param = optimizer.find_nonfinite_grad();
    int32_t bad = bad_param.empty() ? 0 : 1;
    parallel::world().all_reduce<int32_t>(std::span<int32_t>(&bad, 1), parallel::ReduceOp::kMax);
    const double lr_factor = optim::lr_factor(schedule, step);
    double grad_norm = NAN;
    bool applied = false;
    if (bad) {
      ++state.consecutive_skips;
      ++state.skipped_total;
      if (!bad_param.empty())
        std::fprintf(stderr, "[rank %d] step %lld skipped: non-finite gradient in %s\n", info.rank,
                     static_cast<long long>(step + 1), bad_param.c_str());
    } else {
      grad_norm = global_grad_norm(model, mesh.tp());
      const double clip = c.grad_clip > 0 && grad_norm > c.grad_clip ? c.grad_clip / (grad_norm + 1e-6) : 1.0;
      applied = optimizer.step(lr_factor, static_cast<float>(clip)).applied;
      model.end_step();
      state.consecutive_skips = 0;
    }
    ++state.step;
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    total_seconds += seconds;
    if (std::isnan(first_loss)) first_loss = loss;
    last_loss = loss;
    if (lead) {
      std::printf("step %5lld/%lld | loss %.4f | lr %.2e | grad norm %.3f | %8.0f tokens/s | %7.1f ms/step | "
                  "peak mem %.0f MiB%s\n",
                  static_cast<long long>(state.step), static_cast<long long>(c.steps), loss, c.lr * lr_factor,
                  grad_norm, static_cast<double>(tokens_per_step) / seconds, 1e3 * seconds, peak_memory_mib(),
                  applied ? "" : " | SKIPPED (non-finite gradients)");
      std::fflush(stdout);
    }
    write_metrics({{"step", state.step},
                   {"loss", loss},
                   {"lr", c.lr * lr_factor},
                   {"grad_norm", std::isnan(grad_norm) ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(grad_norm)},
                   {"tokens_per_s", static_cast<double>(tokens_per_step) / seconds},
                   {"ms_per_step", 1e3 * seconds},
                   {"peak_mem_mib", peak_memory_mib()},
                   {"skipped", !applied}});
    if (state.consecutive_skips >= c.max_nonfinite) {
      if (lead)
        std::fprintf(stderr, "[rank 0] stopping: %lld consecutive steps with non-finite gradients "
                     "(train.max_nonfinite = %lld)\n", static_cast<long long>(state.consecutive_skips),
                     static_cast<long long>(c.max_nonfinite));
      return 3;
    }
    if (c.eval_every > 0 && state.step % c.eval_every == 0 && state.step < c.steps) {
      eval_loss = evaluate(c, model, val_data, mesh);
      if (lead) std::printf("eval at step %lld | held-out loss %.4f\n", static_cast<long long>(state.step), eval_loss);
      write_metrics({{"step", state.step}, {"eval_loss", eval_loss}});
    }
    if (c.checkpoint_every > 0 && state.step % c.checkpoint_every == 0) {
      save_checkpoint(c, mesh, model, optimizer, state);
      last_saved = state.step;
      if (lead) std::printf("checkpoint saved: step %lld in %s\n", static_cast<long long>(state.step),
                            c.checkpoints().c_str());
      std::fflush(stdout);
    }
  }
  if (last_saved != state.step) {
    save_checkpoint(c, mesh, model, optimizer, state);
    if (lead) std::printf("checkpoint saved: step %lld in %s\n", static_cast<long long>(state.step),
                          c.checkpoints().c_str());
  }
  eval_loss = evaluate(c, model, val_data, mesh);
  write_metrics({{"step", state.step}, {"eval_loss", eval_loss}, {"final", true}});
  const std::string text = c.sample_tokens > 0 ? sample(c, model, mesh) : "";
  if (lead) {
    const int64_t ran = state.step - start_step;
    std::printf("\n== summary ==\nsteps %lld (this run %lld, skipped %lld) | train loss %.4f -> %.4f | held-out loss "
                "%.4f (uniform guess %.4f) | %.1f s, %.0f tokens/s | peak mem %.0f MiB\n",
                static_cast<long long>(state.step), static_cast<long long>(ran),
                static_cast<long long>(state.skipped_total), first_loss, last_loss, eval_loss,
                std::log(static_cast<double>(c.model.vocab)), total_seconds,
                ran > 0 ? static_cast<double>(tokens_per_step * ran) / total_seconds : 0.0, peak_memory_mib());
    if (!text.empty()) std::printf("sample: %s\n", text.c_str());
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace nibble::train
