#include "launch/trainer.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/cpu/gemm_bf16.h"
#include "core/cpu_allocation_tracker.h"
#include "core/data/batch_sampler.h"
#include "core/data/tokenizer.h"
#include "core/gemm.h"
#include "core/model/gpt.h"
#include "core/saved_for_backward_meter.h"
#include "launch/checkpoint_io.h"
#include "launch/device_mesh.h"
#include "launch/eval_sample.h"
#include "launch/fault_injection.h"
#include "launch/grad_sync.h"
#include "launch/log.h"
#include "launch/memory_account.h"
#include "launch/micro_batches.h"
#include "launch/model_layout.h"
#include "launch/precision_policy.h"
#include "launch/quantization_stats_log.h"
#include "launch/run_records.h"
#include "launch/train_optimizer.h"
#include "optim/clip.h"
#include "optim/lr_schedule.h"
#include "parallel/mesh.h"
#include "parallel/nn/pipeline_runtime.h"
#include "parallel/runtime.h"
#include "precision/error.h"

#if NIBBLE_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>

#include "core/cuda/gemm_cublaslt.h"
#endif

namespace nibble::launch {
namespace {

using Clock = std::chrono::steady_clock;

double peak_memory_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;  // Linux reports KiB
}

// The peak of torch's CUDA allocator on `device` in MiB (what the progress line shows on a GPU); NAN on the CPU.
double device_peak_mib(const torch::Device& device) {
#if NIBBLE_WITH_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    return static_cast<double>(
               stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak) /
           (1024.0 * 1024.0);
  }
#endif
  (void)device;
  return NAN;
}

// The allocator's peak since the last reset_peak(device), in bytes, and where it comes from.
void reset_peak(const torch::Device& device) {
#if NIBBLE_WITH_CUDA
  if (device.is_cuda()) {
    c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
    return;
  }
#endif
  (void)device;
  core::reset_cpu_allocation_peak();
}
std::pair<int64_t, std::string> allocator_peak(const torch::Device& device) {
#if NIBBLE_WITH_CUDA
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    return {stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak,
            "torch CUDA allocator"};
  }
#endif
  (void)device;
  return {core::cpu_allocation_stats().peak, "torch CPU allocations"};
}

// The GEMM device for the start-up line: the GPU's compute capability, or the CPU.
core::GemmDevice gemm_device(const torch::Device& device) {
#if NIBBLE_WITH_CUDA
  if (device.is_cuda()) return core::GemmDevice{core::cuda::current_device_sm()};
#endif
  (void)device;
  return core::GemmDevice{};
}

// The pipeline runtime over the pp group (collective: every rank builds it; pp = 1 needs none). Its forward
// reads the micro-batches of the current step from `current`.
std::unique_ptr<parallel::nn::PipelineRuntime> make_pipeline(const TrainConfig& c, const parallel::Mesh& mesh,
                                                             core::model::Gpt& model,
                                                             const MicroBatches* const& current) {
  if (c.pp == 1) return nullptr;
  parallel::nn::PipelineRuntimeOptions o;
  o.schedule.kind = parallel::parse_schedule(c.pp_schedule);
  o.schedule.stages = static_cast<int>(c.pp);
  o.schedule.virtual_chunks = static_cast<int>(c.virtual_stages);
  o.schedule.microbatches = static_cast<int>(c.global_batch / c.dp / c.micro_batch);
  const int64_t seq = c.model.seq_len / c.cp;
  const int64_t rows = c.micro_batch * seq / (c.sequence_parallel ? c.tp : 1);
  o.activation_shape = {rows, c.model.hidden};
  o.activation_device = model.device();
  auto forward = [&model, &current, seq, mb = c.micro_batch](int chunk, int m, const torch::Tensor& input) {
    const size_t ch = static_cast<size_t>(chunk), i = static_cast<size_t>(m);
    // (The backward of (chunk, m) runs later, after other forwards under 1F1B: each Linear's backward draws
    // the counter values its forward reserved (core/linear.h), so it rounds as one rank does.)
    model.set_rounding_stream(current->streams[i], chunk);
    const torch::Tensor h =
        model.forward_chunk(ch, model.chunks()[ch].embedding ? current->tokens[i] : input, mb, seq);
    return model.chunks()[ch].head ? model.head_loss(h, current->targets[i]) : h;
  };
  return std::make_unique<parallel::nn::PipelineRuntime>(mesh.pp(), o, forward);
}

// One step's forwards and backwards over the micro-batches (gradients of the mean loss accumulate in .grad).
// Returns the mean loss over this rank's tokens, on every rank.
double forward_backward(core::model::Gpt& model, const parallel::Mesh& mesh, const MicroBatches& batches,
                        parallel::nn::PipelineRuntime* pipeline, parallel::PipelineTiming& timing) {
  const double m = static_cast<double>(batches.tokens.size());
  if (!pipeline) {
    double loss_sum = 0.0;
    for (size_t i = 0; i < batches.tokens.size(); ++i) {
      model.set_rounding_stream(batches.streams[i]);
      torch::Tensor loss = model.loss(batches.tokens[i], batches.targets[i]);
      (loss / m).backward();
      loss_sum += loss.item<double>();
    }
    return loss_sum / m;
  }
  const parallel::nn::PipelineStepStats stats = pipeline->step();
  timing = parallel::nn::gather_timing(mesh.pp(), stats);
  double loss = 0.0;
  for (double l : stats.losses) loss += l / m;  // only the head's pp rank has losses
  mesh.pp().all_reduce<double>(std::span<double>(&loss, 1), parallel::ReduceOp::kSum);
  return loss;
}

// The summary's pipeline line: medians over the steps (robust to the first step's allocations) of the
// measured split of idle time (parallel/pipeline_schedule.h PipelineTiming), beside Megatron's formula.
void print_pipeline_timing(const std::vector<parallel::PipelineTiming>& timings,
                           const parallel::ScheduleOptions& schedule) {
  auto median = [&](double parallel::PipelineTiming::*field) {
    std::vector<double> v;
    for (const auto& t : timings) v.push_back(t.*field);
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
    return v[v.size() / 2];
  };
  const double bubble = median(&parallel::PipelineTiming::bubble), formula = theoretical_bubble_fraction(schedule);
  const double imbalance = median(&parallel::PipelineTiming::imbalance);
  std::printf("pipeline (median of %zu steps over all pp ranks): measured bubble %.3f = busiest rank's idle / its "
              "compute; (p-1)/(v*m) = %.3f (measured/formula %.2fx) | stage imbalance %.3f = busiest / mean "
              "compute - 1 (parallel.pp_layers evens it) | all ranks' idle / compute %.3f\n",
              timings.size(), bubble, formula, bubble / formula, imbalance, median(&parallel::PipelineTiming::idle));
  // Above 10% the imbalance costs more than timing noise explains: name the rank to lighten, and how.
  if (imbalance <= 0.10) return;
  std::map<int, int> busiest;  // pp rank -> steps it was the busiest
  for (const auto& t : timings) ++busiest[t.busiest_rank];
  const int rank = std::max_element(busiest.begin(), busiest.end(), [](const auto& a, const auto& b) {
                     return a.second < b.second;
                   })->first;
  // Only the end ranks have a split flag that lightens them; a middle rank needs explicit counts.
  const char* holds = rank == 0 ? " (it holds the embedding)"
                      : rank == schedule.stages - 1 ? " (it holds the final norm, LM head and loss)"
                                                    : "";
  const char* flag = rank == 0 ? ", or for an even split set parallel.pp_embedding_as_layer = true"
                     : rank == schedule.stages - 1 ? ", or for an even split set parallel.pp_head_as_layer = true"
                                                   : "";
  std::printf("pipeline: pp rank %d computes the most in %d of %zu steps%s; move a transformer layer off it with "
              "parallel.pp_layers%s\n",
              rank, busiest[rank], timings.size(), holds, flag);
}

}  // namespace

int run_training(const TrainConfig& c, const DeviceChoice& device) {
  core::track_cpu_allocations();  // the memory account's CPU peak (core/cpu_allocation_tracker.h)
  parallel::InitOptions init_options;
  init_options.deadline = std::chrono::milliseconds(static_cast<int64_t>(c.timeout_s * 1000.0));
  init_options.liveness_probe = true;  // a timeout ends this job: name the silent rank in its message
  const auto& info = parallel::init(init_options);
  torch::set_num_threads(static_cast<int>(c.threads > 0 ? c.threads : parallel::cores_per_rank()));
  const bool lead = info.rank == 0;
  parallel::MeshShape shape;
  shape.tp = static_cast<int>(c.tp);
  shape.dp = static_cast<int>(c.dp);
  shape.pp = static_cast<int>(c.pp);
  shape.cp = static_cast<int>(c.cp);
  agree_on_device(device.cuda);
  const std::unique_ptr<parallel::Mesh> mesh_ptr = make_training_mesh(shape, device.cuda);
  const parallel::Mesh& mesh = *mesh_ptr;
  core::data::TokenFile train_file(c.train_path), val_file(c.val_path);
  for (const auto* f : {&train_file, &val_file})
    for (int64_t i = 0; i < std::min<int64_t>(f->size(), 4096); ++i)
      if (f->data()[i] >= c.model.vocab)
        throw InvalidArgument("token file '" + f->path() + "' holds id " + std::to_string(f->data()[i]) +
                              " >= model.vocab = " + std::to_string(c.model.vocab));
  const core::data::BatchSampler train_data(train_file, c.model.seq_len, c.data_seed);
  const core::data::BatchSampler val_data(val_file, c.model.seq_len, c.data_seed);

  const std::unique_ptr<core::model::Gpt> model_ptr = build_model(c, mesh);
  core::model::Gpt& model = *model_ptr;
  // On a GPU: this rank's device (parallel::init bound it: local rank -> device), before the optimizer sees the
  // parameters, so its states are created there too.
  const torch::Device train_device = device.cuda ? torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(info.device))
                                                 : torch::Device(torch::kCPU);
  if (device.cuda) model.to(train_device);
  TrainOptimizer optimizer(c, model, mesh);
  const MicroBatches* current = nullptr;  // the step's batches, read by the pipeline's forward
  const std::unique_ptr<parallel::nn::PipelineRuntime> pipeline = make_pipeline(c, mesh, model, current);
  const optim::LrSchedule schedule = optim::make_lr_schedule(c.schedule, c.warmup, c.steps, c.min_lr_ratio);

  const FaultPlan faults = read_fault_plan(model);  // test-only (launch/fault_injection.h); none in real runs
  TrainingState state;
  std::string resumed_from;
  PrecisionPolicy policy(model.config(), lead);  // model.precision_policy (its rungs come back with a checkpoint)
  if (c.resuming()) resumed_from = load_checkpoint(c, mesh, model, optimizer, state, &policy);
  if (!resumed_from.empty() && lead)
    std::printf("resumed from %s at step %lld\n", resumed_from.c_str(), static_cast<long long>(state.step));

  int64_t params = 0;
  for (const auto& p : model.params()) params += p.tensor.numel();
  std::string stages;
  for (const auto& k : model.chunks())
    stages += (stages.empty() ? "" : ", ") + std::string(k.embedding ? "embedding + " : "") + "layers " +
              std::to_string(k.first_layer) + "-" + std::to_string(k.end_layer - 1) + (k.head ? " + head" : "");
  std::unique_ptr<RunRecords> metrics;
  if (lead) {
    std::filesystem::create_directories(c.out_dir);
    metrics = std::make_unique<RunRecords>(c.out_dir + "/metrics.jsonl", resumed_from.empty() ? -1 : state.step,
                                           resumed_from);
    if (metrics->dropped_torn() + metrics->dropped_after_checkpoint() > 0)
      std::printf("metrics.jsonl: dropped %lld record(s) of steps after the checkpoint and %lld unreadable line(s) "
                  "a crash left\n",
                  static_cast<long long>(metrics->dropped_after_checkpoint()),
                  static_cast<long long>(metrics->dropped_torn()));
    std::printf("nibble-train: %lld parameters on rank 0 (%lld layers, hidden %lld, %lld heads; rank 0 holds "
                "%s), recipe %s (bf16 first %lld / last %lld), %s; world %d: %s; %lld steps of %lld x %lld tokens "
                "(micro-batch %lld)\n",
                static_cast<long long>(params), static_cast<long long>(c.model.layers),
                static_cast<long long>(c.model.hidden), static_cast<long long>(c.model.heads), stages.c_str(),
                c.model.recipe.c_str(),
                static_cast<long long>(c.model.bf16_first), static_cast<long long>(c.model.bf16_last),
                ("optimizer " + c.optimizer + " (" + c.state + " states" +
                 (c.zero ? ", ZeRO-1 over dp x cp = " + std::to_string(c.dp * c.cp) : "") + ")")
                    .c_str(),
                info.world_size,
                mesh.shape().str().c_str(), static_cast<long long>(c.steps), static_cast<long long>(c.global_batch),
                static_cast<long long>(c.model.seq_len), static_cast<long long>(c.micro_batch));
    if (!c.model.layer_recipes.empty() || !c.model.recipe_overrides.empty()) {
      std::string per_layer;
      for (int64_t i = 0; i < c.model.layers; ++i)
        per_layer += (i ? ", " : "") + core::model::layer_recipe(c.model, i).name;
      std::printf("recipes per layer: %s%s\n", per_layer.c_str(),
                  c.model.recipe_overrides.empty() ? "" : ("; overrides: " + c.model.recipe_overrides).c_str());
    }
    // The device and, for the layers' recipe, which kernel runs each GEMM there (decided once, core/gemm_path.h).
    // On the CPU, also the GEMM micro-kernel (core/cpu/gemm_bf16.h: by CPU vendor or NIBBLE_CPU_GEMM_KERNEL).
    const std::string cpu_kernel =
        device.cuda ? "" : std::string("; CPU GEMM kernel ") + core::cpu::gemm_kernel_name(core::cpu::gemm_default_kernel());
    std::printf(
        "device: %s; GEMMs (%s): %s%s\n", device.why.c_str(), c.model.recipe.c_str(),
        describe_gemm_paths(core::recipe_preset(c.model.recipe), gemm_device(train_device)).c_str(), cpu_kernel.c_str());
    if (optimizer.overlapped())
      std::printf("gradient reduction over dp x cp: overlapped with backward, %zu bucket(s) of up to %g MB\n",
                  optimizer.num_buckets(), c.grad_bucket_mb);
    else if (mesh.dp_cp().size() > 1)
      std::printf("gradient reduction over dp x cp: after backward (%s)\n",
                  c.overlap_grad_reduce ? "the parameters are on a GPU: launch/train_optimizer.h"
                                        : "parallel.overlap_grad_reduce = false");
    if (device.cuda && info.world_size > 1)
      std::printf("collectives of CUDA tensors: %s\n", describe_device_groups(mesh).c_str());
    if (pipeline)
      std::printf("pipeline: %s schedule, pp %lld x %lld virtual stages, %d micro-batches; the checker's "
                  "simulated bubble %.3f, (p-1)/(v*m) = %.3f\n",
                  c.pp_schedule.c_str(), static_cast<long long>(c.pp), static_cast<long long>(c.virtual_stages),
                  pipeline->schedule().options.microbatches, pipeline->check_report().bubble_fraction,
                  static_cast<double>(c.pp - 1) /
                      static_cast<double>(c.virtual_stages * pipeline->schedule().options.microbatches));
    std::fflush(stdout);
  }
  QuantizationStatsLog stats_log(c, lead, resumed_from.empty() ? -1 : state.step, resumed_from);
  policy.label(stats_log);
  auto write_metrics = [&](const nlohmann::ordered_json& j) {
    if (metrics) metrics->write(j);
  };
  // A checkpoint every rank saves, or, when some rank cannot write it, what checkpoint.on_error says: false
  // means stop. The previous checkpoint and `latest` are untouched either way (checkpoint_io.h).
  auto checkpoint = [&]() -> bool {
    try {
      save_checkpoint(c, mesh, model, optimizer, state, &policy);
    } catch (const CheckpointWriteError& e) {
      const bool go_on = c.checkpoint_on_error == "continue";
      if (lead || e.here())
        log_error("checkpoint at step " + std::to_string(state.step) + " was not written: " + e.what() +
                  "; the previous checkpoint and `latest` are untouched; " +
                  (go_on ? "training goes on (checkpoint.on_error = \"continue\")"
                         : "stopping (checkpoint.on_error = \"stop\")"));
      return go_on;
    }
    if (lead) {
      std::printf("checkpoint saved: step %lld in %s\n", static_cast<long long>(state.step), c.checkpoints().c_str());
      std::fflush(stdout);
    }
    return true;
  };

  const int64_t tokens_per_step = c.global_batch * c.model.seq_len;
  double first_loss = NAN, last_loss = NAN, total_seconds = 0.0;
  std::vector<parallel::PipelineTiming> timings;  // per step, for the summary's medians
  int64_t last_saved = state.step > 0 ? state.step : -1;
  double eval_loss = NAN;
  const int64_t start_step = state.step;
  while (state.step < c.steps) {
    const int64_t step = state.step;  // 0-based index of this update
    parallel::set_step(step + 1);
    const auto t0 = Clock::now();
    // The memory account covers the first two steps of this run: the optimizer creates its states in the first
    // step's update, so the second step's forward and backward are the first with everything live.
    const bool account_memory = step < start_step + 2 && (step + 1 == start_step + 2 || step + 1 == c.steps);
    if (step == start_step) reset_peak(train_device);
    const int64_t saved_before = core::saved_bytes();
    model.zero_grad();
    const MicroBatches batches = step_batches(c, train_data, mesh, step, train_device);
    current = &batches;
    parallel::PipelineTiming timing;
    const bool collect_stats = stats_log.due(step);
    if (collect_stats) stats_log.begin(model);
    inject_before_forward(faults, model, step + 1);
    const double local_loss = forward_backward(model, mesh, batches, pipeline.get(), timing);
    if (collect_stats) policy.measured(stats_log.finish(model, step + 1));
    inject_after_backward(faults, model, step + 1);
    current = nullptr;
    model.tensor_parallel().all_reduce_replicated_grads(model.replicated_parameters());
    sum_tied_embedding_grads(model, mesh);
    const double loss = mean_over(mesh.dp_cp(), local_loss);

    // NaN/Inf policy: every rank must agree to skip (tp and pp ranks hold different parameters).
    const std::string bad_param = optimizer.find_nonfinite_grad();
    int32_t bad = bad_param.empty() ? 0 : 1;
    parallel::world().all_reduce<int32_t>(std::span<int32_t>(&bad, 1), parallel::ReduceOp::kMax);
    if (bad) policy.nonfinite(model);  // (before the gradients are discarded)
    const double lr_factor = optim::lr_factor(schedule, step);
    std::map<std::string, std::map<std::string, core::QuantizationErrorSums>> state_stats;  // stats steps only
    double grad_norm = NAN, reduce_ms = NAN;  // reduce_ms: the dp x cp reduction's time not hidden by backward
    bool applied = false;
    if (bad) {
      optimizer.discard_gradients();
      ++state.consecutive_skips;
      ++state.skipped_total;
      if (!bad_param.empty())
        log_warning("step " + std::to_string(step + 1) + " skipped: non-finite gradient in " + bad_param);
    } else {
      const auto reduce_start = Clock::now();
      optimizer.reduce_gradients();  // averaged over dp x cp (ZeRO-1: reduce-scattered to the shards)
      reduce_ms = 1e3 * std::chrono::duration<double>(Clock::now() - reduce_start).count();
      grad_norm = optimizer.grad_norm();
      const float grad_scale = optim::clip_coefficient(grad_norm, c.grad_clip);  // grad_clip 0: off
      const auto state_probe = collect_stats ? optimizer.probe_states(grad_scale) : nullptr;
      optimizer.step(lr_factor, grad_scale);
      if (state_probe) state_stats = state_probe->measure();
      applied = true;
      reduce_delayed_amaxes(model, mesh);
      model.end_step();
      state.consecutive_skips = 0;
    }
    if (collect_stats) stats_log.finish_states(state_stats, step + 1);  // (every rank, applied or not)
    ++state.step;
    // The loss probe (model.adaptive_measure = "loss_probe") on the updated weights, collective, leaving the
    // model's states as they were; not after the last step, which no decision can help any more.
    if (collect_stats && policy.probes() && state.step < c.steps)
      write_metrics(policy.probe(model, state.step, [&] {
        return evaluate(c, model, train_data, mesh, c.model.adaptive_probe_batches);
      }));
    for (const auto& record : policy.end_step(model, stats_log, state.step)) write_metrics(record);  // the boundary
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    if (account_memory) {
      const auto [peak, source] = allocator_peak(train_device);
      const MemoryAccount account =
          measure_memory(model, optimizer, core::saved_bytes() - saved_before,
                         static_cast<int64_t>(batches.tokens.size()), peak, source);
      if (lead) std::printf("memory over steps %lld-%lld, rank 0: %s\n", static_cast<long long>(start_step + 1),
                            static_cast<long long>(state.step), describe(account).c_str());
      write_metrics({{"step", state.step}, {"memory", to_json(account)}});
    }
    total_seconds += seconds;
    if (std::isnan(first_loss)) first_loss = loss;
    last_loss = loss;
    if (lead) {
      char bubble_text[64] = "";
      if (pipeline)
        std::snprintf(bubble_text, sizeof bubble_text, " | bubble %.3f imbalance %.3f", timing.bubble,
                      timing.imbalance);
      char device_text[48] = "";
      if (train_device.is_cuda())
        std::snprintf(device_text, sizeof device_text, " | GPU peak %.0f MiB", device_peak_mib(train_device));
      std::printf("step %5lld/%lld | loss %.4f | lr %.2e | grad norm %.3f | %8.0f tokens/s | %7.1f ms/step | "
                  "peak mem %.0f MiB%s%s%s\n",
                  static_cast<long long>(state.step), static_cast<long long>(c.steps), loss, c.lr * lr_factor,
                  grad_norm, static_cast<double>(tokens_per_step) / seconds, 1e3 * seconds, peak_memory_mib(),
                  device_text, bubble_text, applied ? "" : " | SKIPPED (non-finite gradients)");
      std::fflush(stdout);
    }
    write_metrics({{"step", state.step},
                   {"loss", loss},
                   {"lr", c.lr * lr_factor},
                   {"grad_norm", std::isnan(grad_norm) ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(grad_norm)},
                   {"tokens_per_s", static_cast<double>(tokens_per_step) / seconds},
                   {"ms_per_step", 1e3 * seconds},
                   {"peak_mem_mib", peak_memory_mib()},
                   {"gpu_peak_mib", train_device.is_cuda() ? nlohmann::ordered_json(device_peak_mib(train_device))
                                                            : nlohmann::ordered_json(nullptr)},
                   {"bubble", pipeline ? nlohmann::ordered_json(timing.bubble) : nlohmann::ordered_json(nullptr)},
                   {"stage_imbalance",
                    pipeline ? nlohmann::ordered_json(timing.imbalance) : nlohmann::ordered_json(nullptr)},
                   {"skipped", !applied},
                   {"grad_reduce_exposed_ms", std::isnan(reduce_ms) ? nlohmann::ordered_json(nullptr)
                                                                    : nlohmann::ordered_json(reduce_ms)},
                   {"grad_buckets_in_backward", optimizer.buckets_launched_in_backward()}});
    if (pipeline) timings.push_back(timing);
    if (state.consecutive_skips >= c.max_nonfinite) {
      if (lead)
        log_error("stopping: " + std::to_string(state.consecutive_skips) +
                  " consecutive steps with non-finite gradients (train.max_nonfinite = " +
                  std::to_string(c.max_nonfinite) + ")");
      return 3;
    }
    if (c.eval_every > 0 && state.step % c.eval_every == 0 && state.step < c.steps) {
      eval_loss = evaluate(c, model, val_data, mesh, c.eval_batches);
      if (lead) std::printf("eval at step %lld | held-out loss %.4f\n", static_cast<long long>(state.step), eval_loss);
      write_metrics({{"step", state.step}, {"eval_loss", eval_loss}});
    }
    if (c.checkpoint_every > 0 && state.step % c.checkpoint_every == 0) {
      last_saved = state.step;
      if (!checkpoint()) return 4;
    }
  }
  if (last_saved != state.step && !checkpoint()) return 4;
  if (policy.adaptive()) {
    write_metrics(policy.summary_record(state.step));
    if (lead) std::printf("%s\n", policy.summary().c_str());
  }
  eval_loss = evaluate(c, model, val_data, mesh, c.eval_batches);
  write_metrics({{"step", state.step}, {"eval_loss", eval_loss}, {"final", true}});
  const std::string text =
      c.sample_tokens > 0 ? sample(c, model, mesh, core::data::Tokenizer::for_token_file(c.train_path)) : "";
  if (lead) {
    const int64_t ran = state.step - start_step;
    char train_text[96] = "no training in this run";
    if (ran > 0) std::snprintf(train_text, sizeof train_text, "train loss %.4f -> %.4f", first_loss, last_loss);
    std::printf("\n== summary ==\nsteps %lld (this run %lld, skipped %lld) | %s | held-out loss "
                "%.4f (uniform guess %.4f) | %.1f s, %.0f tokens/s | peak mem %.0f MiB\n",
                static_cast<long long>(state.step), static_cast<long long>(ran),
                static_cast<long long>(state.skipped_total), train_text, eval_loss,
                std::log(static_cast<double>(c.model.vocab)), total_seconds,
                ran > 0 ? static_cast<double>(tokens_per_step * ran) / total_seconds : 0.0, peak_memory_mib());
    if (pipeline && !timings.empty()) print_pipeline_timing(timings, pipeline->schedule().options);
    if (!text.empty()) std::printf("sample: %s\n", text.c_str());
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace nibble::launch
