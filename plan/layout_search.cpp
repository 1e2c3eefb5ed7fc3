// Layout enumeration and ranking (see plan/layout_search.h).
#include "plan/layout_search.h"

#include <algorithm>
#include <sstream>

#include "parallel/pipeline_schedule.h"
#include "precision/error.h"

namespace nibble::plan {
namespace {

std::vector<int> divisors(int n) {
  std::vector<int> d;
  for (int i = 1; i <= n; ++i)
    if (n % i == 0) d.push_back(i);
  return d;
}

}  // namespace

void check_layout(const ModelSpec& model, const TrainingSpec& training, const Layout& layout) {
  parallel::ModelShape shape;
  shape.num_heads = model.heads;
  shape.num_kv_heads = model.kv_heads;
  shape.hidden = model.hidden;
  shape.ffn_hidden = model.ffn_hidden();
  shape.vocab = model.vocab;
  shape.num_layers = model.layers;
  shape.seq_len = model.seq_len;
  shape.sequence_parallel = layout.sequence_parallel;
  parallel::validate_mesh(layout.mesh, layout.gpus(), shape);
  if (layout.micro_batch < 1 || training.global_batch % (layout.micro_batch * layout.mesh.dp) != 0)
    throw InvalidArgument("train.global_batch = " + std::to_string(training.global_batch) +
                          " must be divisible by train.micro_batch * parallel.dp = " +
                          std::to_string(layout.micro_batch) + " * " + std::to_string(layout.mesh.dp));
  if (layout.mesh.pp > 1) {  // the layer split and the schedule, proven deadlock-free as nibble-train does
    parallel::LayerAssignmentOptions split;
    split.num_layers = static_cast<int>(model.layers);
    split.stages = layout.mesh.pp;
    split.virtual_chunks = training.pp_schedule == "interleaved" ? training.virtual_stages : 1;
    (void)parallel::assign_layers(split);
    parallel::ScheduleOptions schedule;
    schedule.kind = parallel::parse_schedule(training.pp_schedule);
    schedule.stages = layout.mesh.pp;
    schedule.virtual_chunks = split.virtual_chunks;
    schedule.microbatches = static_cast<int>(layout.microbatches(training));
    (void)parallel::check_schedule(parallel::make_schedule(schedule));
  }
}

std::vector<RankedLayout> rank_layouts(const ModelSpec& model, const TrainingSpec& training,
                                       const ClusterSpec& cluster, const SearchOptions& options,
                                       const Efficiency& efficiency) {
  std::vector<RankedLayout> out;
  for (int tp : divisors(options.gpus)) {
    if (options.max_tp > 0 && tp > options.max_tp) continue;
    for (int cp : divisors(options.gpus / tp))
      for (int pp : divisors(options.gpus / (tp * cp))) {
        const int dp = options.gpus / (tp * cp * pp);
        for (int64_t mb : options.micro_batches)
          for (bool sp : {false, true}) {
            if (sp && (tp == 1 || !options.try_sequence_parallel)) continue;
            for (Recompute rc : options.recomputes) {
              // Fused attention keeps no s x s tensor: selective recomputation would be the same as none.
              if (rc == Recompute::kSelective && model.attention == AttentionKind::kFlash) continue;
              Layout layout{parallel::MeshShape{tp, cp, dp, pp}, mb, sp, rc};
              try {
                check_layout(model, training, layout);
              } catch (const Error&) {
                continue;  // nibble-train would refuse it
              }
              RankedLayout r{layout, estimate_memory(model, training, layout, cluster),
                             estimate_step_time(model, training, layout, cluster, efficiency)};
              out.push_back(r);
            }
          }
      }
  }
  std::stable_sort(out.begin(), out.end(), [](const RankedLayout& a, const RankedLayout& b) {
    if (a.memory.fits() != b.memory.fits()) return a.memory.fits();
    return a.time.tokens_per_second > b.time.tokens_per_second;
  });
  return out;
}

std::string parallel_toml_section(const Layout& layout, const TrainingSpec& training) {
  std::ostringstream o;
  o << "[parallel]\n"
    << "tp = " << layout.mesh.tp << "\n"
    << "cp = " << layout.mesh.cp << "\n"
    << "dp = " << layout.mesh.dp << "\n"
    << "pp = " << layout.mesh.pp << "\n"
    << "sequence_parallel = " << (layout.sequence_parallel ? "true" : "false") << "\n";
  if (layout.mesh.pp > 1) o << "pp_schedule = \"" << training.pp_schedule << "\"\n";
  if (layout.mesh.pp > 1 && training.pp_schedule == "interleaved")
    o << "virtual_stages = " << training.virtual_stages << "\n";
  o << "\n[train]\nmicro_batch = " << layout.micro_batch << "  # global_batch = " << training.global_batch << "\n";
  // (nibble-train's model.recompute takes the plan's names: none, selective, full)
  if (layout.recompute != Recompute::kNone)
    o << "\n[model]\nrecompute = \"" << recompute_name(layout.recompute) << "\"  # the layout fits only with it\n";
  return o.str();
}

}  // namespace nibble::plan
