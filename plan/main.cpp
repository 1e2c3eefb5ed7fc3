// nibble-plan: which tp x cp x dp x pp layout (and micro-batch, sequence parallelism, recomputation) of a
// cluster fits a model in memory and trains it fastest, before booking the cluster. See docs/PLAN.md.
//
//   nibble-plan --cluster h100 --gpus 64 --config examples/configs/default.toml [--hidden 8192 ...]
//   nibble-plan validate   # the published runs: predicted vs published, error per row
//   nibble-plan fit        # re-fit the efficiencies of plan/efficiency.h against those runs
//   nibble-plan --cluster plan/clusters/this_machine.toml --config c.toml predict --tp 2 --dp 2
//                          # one layout's ms/step as JSON (a calibrated CPU description: plan/calibrate.py)
//   nibble-plan --hidden 256 --heads 4 --ffn 688 --seq-len 128 --micro-batch 4 --recipe nvfp4 elementwise-bytes
//                          # the bytes a calibrated CPU's element-wise rate for that recipe is over (JSON line)
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <optional>
#include <vector>

#include "parallel/mesh.h"
#include "plan/cluster.h"
#include "plan/layout_search.h"
#include "plan/predict.h"
#include "plan/recipe_costs.h"
#include "plan/report.h"
#include "plan/step_time.h"
#include "plan/train_config_reader.h"
#include "plan/validation.h"

namespace {

using namespace nibble::plan;

struct ModelFlags {
  std::optional<int64_t> layers, hidden, heads, kv_heads, ffn, vocab, seq_len, global_batch, micro_batch;
  std::optional<std::string> recipe, state, optimizer;
  std::optional<int> zero;
  std::optional<bool> tied;
};

void apply(const ModelFlags& f, PlanInput& in) {
  if (f.layers) in.model.layers = *f.layers;
  if (f.hidden) in.model.hidden = *f.hidden;
  if (f.heads) in.model.heads = *f.heads;
  if (f.kv_heads) in.model.kv_heads = *f.kv_heads;
  if (f.ffn) in.model.ffn = *f.ffn;
  if (f.vocab) in.model.vocab = *f.vocab;
  if (f.seq_len) in.model.seq_len = *f.seq_len;
  if (f.tied) in.model.tied_embeddings = *f.tied;
  if (f.global_batch) in.training.global_batch = *f.global_batch;
  if (f.micro_batch) in.training.micro_batch = *f.micro_batch;
  if (f.recipe) in.training.recipe = *f.recipe;
  if (f.state) in.training.optimizer_state = *f.state;
  if (f.optimizer) in.training.optimizer = *f.optimizer;
  if (f.zero) in.training.zero1 = *f.zero == 1;
}

int run_plan(const std::string& cluster_name, int gpus, const std::string& config, const ModelFlags& flags,
             const std::string& recompute, size_t top, int max_tp) {
  PlanInput in = config.empty() ? nibble_defaults() : read_train_config(config);
  apply(flags, in);
  in.model.validate();
  in.training.validate();
  const ClusterSpec cluster = load_cluster(cluster_name);
  SearchOptions options;
  options.gpus = gpus;
  options.max_tp = max_tp;
  if (recompute != "auto") options.recomputes = {parse_recompute(recompute)};
  // Micro-batches to try: powers of two up to the per-dp-rank batch, and the config's own.
  options.micro_batches.clear();
  for (int64_t mb = 1; mb <= in.training.global_batch && mb <= 64; mb *= 2) options.micro_batches.push_back(mb);
  if (in.training.micro_batch > 64) options.micro_batches.push_back(in.training.micro_batch);
  const RecipeCosts costs = recipe_costs(in.training.recipe, cluster.cuda_sm);

  std::printf("cluster %s: %s\n", cluster.name.c_str(), cluster.description.c_str());
  std::printf("model: %lld layers, hidden %lld, %lld heads, ffn %lld, vocab %lld, seq %lld: %.2fB parameters\n",
              static_cast<long long>(in.model.layers), static_cast<long long>(in.model.hidden),
              static_cast<long long>(in.model.heads), static_cast<long long>(in.model.ffn_hidden()),
              static_cast<long long>(in.model.vocab), static_cast<long long>(in.model.seq_len),
              static_cast<double>(in.model.total_params()) / 1e9);
  std::printf("training: global batch %lld, recipe %s (fprop on %s), optimizer %s with %s states%s\n",
              static_cast<long long>(in.training.global_batch), in.training.recipe.c_str(), costs.fprop_path.c_str(),
              in.training.optimizer.c_str(), in.training.optimizer_state.c_str(), in.training.zero1 ? ", ZeRO-1" : "");
  std::printf("%s", efficiency_text(default_efficiency(cluster)).c_str());

  const std::vector<RankedLayout> ranked =
      rank_layouts(in.model, in.training, cluster, options, default_efficiency(cluster));
  if (ranked.empty()) {
    std::printf("\nno layout of %d GPUs passes nibble's rules for this model and batch\n", gpus);
    return 2;
  }
  std::printf("\n%zu layouts pass nibble-train's rules; ranked by (fits, tokens/s):\n\n", ranked.size());
  std::printf("%s", layout_table(ranked, top).c_str());
  const RankedLayout& best = ranked.front();
  std::printf("\nbest layout:\n\n%s\n%s\n", memory_breakdown_text(best.memory).c_str(),
              step_breakdown_text(best.time).c_str());
  if (!best.memory.fits()) std::printf("no layout fits in memory: the best shown is the fastest of those that do not\n\n");
  std::printf("as nibble-train config:\n\n%s", parallel_toml_section(best.layout, in.training).c_str());
  return 0;
}

int run_predict(const std::string& cluster_name, const std::string& config, const ModelFlags& flags,
                const nibble::parallel::MeshShape& mesh, const std::vector<double>& efficiency,
                std::optional<double> cores) {
  PlanInput in = config.empty() ? nibble_defaults() : read_train_config(config);
  apply(flags, in);
  in.model.validate();
  in.training.validate();
  ClusterSpec cluster = load_cluster(cluster_name);
  if (cores) cluster.cores_per_node = *cores;
  const Efficiency e =
      efficiency.empty() ? default_efficiency(cluster) : Efficiency{efficiency[0], efficiency[1], efficiency[2]};
  const Layout layout = layout_of(in.training, mesh);
  const StepTime t = predict_step(in.model, in.training, layout, cluster, e);
  std::printf("%s\n", prediction_json(in.model, in.training, layout, cluster, t).c_str());
  return 0;
}

// One line of JSON: the bytes of one layer's element-wise work (norms, SwiGLU, residual adds) for one micro-batch
// on one rank (tp = cp = 1) that a calibrated CPU description's `cpu.elementwise_gbps.<slot>` rate for the
// recipe is over (calibrated_elementwise_bytes, plan/step_time.h). plan/calibrate.py measures that work and
// divides by "total": the planner, not the script, counts the bytes.
int run_elementwise_bytes(const std::string& config, const ModelFlags& flags) {
  PlanInput in = config.empty() ? nibble_defaults() : read_train_config(config);
  apply(flags, in);
  in.model.validate();
  in.training.validate();
  const Layout layout = layout_of(in.training, nibble::parallel::MeshShape{});
  const ElementwiseBytes e = calibrated_elementwise_bytes(in.model, in.training.recipe, layout);
  std::printf("{\"recipe\": \"%s\", \"micro_batch\": %lld, \"seq_len\": %lld, \"hidden\": %lld, \"heads\": %lld, "
              "\"kv_heads\": %lld, \"ffn\": %lld, \"tp\": 1, \"cp\": 1, \"forward\": %.17g, \"backward\": %.17g, "
              "\"total\": %.17g}\n",
              in.training.recipe.c_str(), static_cast<long long>(layout.micro_batch),
              static_cast<long long>(in.model.seq_len), static_cast<long long>(in.model.hidden),
              static_cast<long long>(in.model.heads), static_cast<long long>(in.model.kv()),
              static_cast<long long>(in.model.ffn_hidden()), e.forward, e.backward, e.total());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"nibble-plan: memory and step time of every tp x cp x dp x pp layout of a cluster (docs/PLAN.md)"};
  std::string cluster = "h100", config, recompute = "auto";
  int gpus = 8, max_tp = 0;
  size_t top = 15;
  ModelFlags flags;
  app.add_option("--cluster", cluster, "a100, h100, h200, b200, gb200, or a cluster .toml")->capture_default_str();
  app.add_option("--gpus", gpus, "GPUs in the job")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--config", config, "a nibble-train config: its [model], [train] and [optim] keys");
  app.add_option("--recompute", recompute, "auto (try none, selective, full), none, selective or full")
      ->capture_default_str();
  app.add_option("--top", top, "rows of the ranked table")->capture_default_str();
  app.add_option("--max-tp", max_tp, "largest tp to consider (0: any)")->capture_default_str();
  app.add_option("--layers", flags.layers, "model.layers");
  app.add_option("--hidden", flags.hidden, "model.hidden");
  app.add_option("--heads", flags.heads, "model.heads");
  app.add_option("--kv-heads", flags.kv_heads, "key-value heads (GQA; default = heads)");
  app.add_option("--ffn", flags.ffn, "model.ffn_hidden");
  app.add_option("--vocab", flags.vocab, "model.vocab");
  app.add_option("--seq-len", flags.seq_len, "model.seq_len");
  app.add_option("--tied", flags.tied, "model.tie_embeddings");
  app.add_option("--global-batch", flags.global_batch, "train.global_batch");
  app.add_option("--micro-batch", flags.micro_batch, "train.micro_batch");
  app.add_option("--recipe", flags.recipe, "model.recipe");
  app.add_option("--state", flags.state, "optim.state: fp32, bf16, fp8, fp8_plain, int8");
  app.add_option("--optimizer", flags.optimizer, "optim.optimizer: adamw or sgd");
  app.add_option("--zero", flags.zero, "optim.zero: 0 or 1");

  CLI::App* validate = app.add_subcommand("validate", "predict the published runs (docs/PLAN.md) and print the errors");
  CLI::App* fit = app.add_subcommand("fit", "grid-search the efficiencies against the published runs");
  CLI::App* predict = app.add_subcommand("predict", "one layout's predicted step as JSON (the options above set "
                                                     "the cluster, config and model)");
  nibble::parallel::MeshShape mesh;
  std::vector<double> efficiency;
  predict->add_option("--tp", mesh.tp, "tensor parallel")->capture_default_str()->check(CLI::PositiveNumber);
  predict->add_option("--cp", mesh.cp, "context parallel")->capture_default_str()->check(CLI::PositiveNumber);
  predict->add_option("--dp", mesh.dp, "data parallel")->capture_default_str()->check(CLI::PositiveNumber);
  predict->add_option("--pp", mesh.pp, "pipeline parallel")->capture_default_str()->check(CLI::PositiveNumber);
  predict->add_option("--efficiency", efficiency, "gemm hbm network fractions (default: 1 1 1 on a calibrated CPU "
                                                  "description, plan/efficiency.h's on a GPU cluster)")
      ->expected(3);
  std::optional<double> cores;
  predict->add_option("--cores", cores, "override the description's cores_per_node (a CPU machine's shared cores)")
      ->check(CLI::PositiveNumber);
  CLI::App* elementwise = app.add_subcommand(
      "elementwise-bytes", "the bytes of a layer's element-wise work, one micro-batch, that a calibrated CPU's "
                           "cpu.elementwise_gbps rate for --recipe is over (JSON; plan/calibrate.py divides by them)");
  app.fallthrough();
  CLI11_PARSE(app, argc, argv);
  try {
    if (predict->parsed()) return run_predict(cluster, config, flags, mesh, efficiency, cores);
    if (elementwise->parsed()) return run_elementwise_bytes(config, flags);
    if (validate->parsed() || fit->parsed()) {
      const ClusterSpec a100 = load_cluster("a100");
      const Efficiency e = fit->parsed() ? fit_efficiency(a100) : kFittedEfficiency;
      std::printf("%s\n%s", efficiency_text(e).c_str(), validation_table(validate_published(a100, e)).c_str());
      return 0;
    }
    return run_plan(cluster, gpus, config, flags, recompute, top, max_tp);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nibble-plan: %s\n", e.what());
    return 1;
  }
}
