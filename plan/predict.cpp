// One layout's prediction (see plan/predict.h).
#include "plan/predict.h"

#include <cstdio>

#include "plan/layout_search.h"
#include "plan/memory_model.h"
#include "plan/recipe_costs.h"

namespace nibble::plan {

Efficiency default_efficiency(const ClusterSpec& cluster) {
  return cluster.cores_per_node > 0 ? Efficiency{1.0, 1.0, 1.0} : kFittedEfficiency;
}

StepTime predict_step(const ModelSpec& model, const TrainingSpec& training, const Layout& layout,
                      const ClusterSpec& cluster, const Efficiency& efficiency) {
  check_layout(model, training, layout);
  return estimate_step_time(model, training, layout, cluster, efficiency);
}

std::string prediction_json(const ModelSpec& model, const TrainingSpec& training, const Layout& layout,
                            const ClusterSpec& cluster, const StepTime& t) {
  const MemoryBreakdown memory = estimate_memory(model, training, layout, cluster);
  char buf[1024];
  std::snprintf(buf, sizeof buf,
                "{\"cluster\": \"%s\", \"recipe\": \"%s\", \"tp\": %d, \"cp\": %d, \"dp\": %d, \"pp\": %d, "
                "\"micro_batch\": %lld, \"sequence_parallel\": %s, \"rank_share\": %.4g, \"ms_per_step\": %.6g, "
                "\"ms\": {\"gemm\": %.6g, \"attention\": %.6g, \"memory_bound\": %.6g, \"layer_remainder\": %.6g, "
                "\"tp_comm\": %.6g, "
                "\"cp_comm\": %.6g, \"pp_comm\": %.6g, \"bubble\": %.6g, \"shared_cores\": %.6g, \"dp_comm\": %.6g, "
                "\"optimizer\": %.6g}, "
                "\"memory_gb\": %.6g, \"fits\": %s, ",
                cluster.name.c_str(), training.recipe.c_str(), layout.mesh.tp, layout.mesh.cp, layout.mesh.dp,
                layout.mesh.pp, static_cast<long long>(layout.micro_batch), layout.sequence_parallel ? "true" : "false",
                cluster.rank_share(layout.gpus()), 1e3 * t.total, 1e3 * t.gemm, 1e3 * t.attention,
                1e3 * t.memory_bound, 1e3 * t.layer_remainder, 1e3 * t.tp_comm, 1e3 * t.cp_comm, 1e3 * t.pp_comm, 1e3 * t.bubble,
                1e3 * t.shared_cores, 1e3 * t.dp_comm, 1e3 * t.optimizer, memory.total() / 1e9,
                memory.fits() ? "true" : "false");
  char mem[768];
  std::snprintf(mem, sizeof mem,
                "\"memory\": {\"stage\": %d, \"parameters\": %.17g, \"weight_copies\": %.17g, \"gradients\": %.17g, "
                "\"optimizer_states\": %.17g, \"activations\": %.17g, \"logits\": %.17g, \"comm_buffers\": %.17g, "
                "\"saved_per_microbatch\": %.17g, \"total\": %.17g, \"capacity\": %.17g}, ",
                memory.stage, memory.parameters, memory.weight_copies, memory.gradients, memory.optimizer_states,
                memory.activations, memory.logits, memory.comm_buffers, memory.saved_per_microbatch, memory.total(),
                memory.capacity);
  const ElementwiseBytes e =
      layer_elementwise_bytes(model, recipe_costs(training.recipe, cluster.cuda_sm), layout, cluster);
  char ew[160];
  std::snprintf(ew, sizeof ew, "\"elementwise_bytes_per_layer\": {\"forward\": %.17g, \"backward\": %.17g}}",
                e.forward, e.backward);
  return std::string(buf) + mem + ew;
}

}  // namespace nibble::plan
