#pragma once
// Every layout of a cluster's GPUs that nibble-train would accept, estimated and ranked. A layout is accepted
// by nibble's own rules, called rather than restated: parallel::validate_mesh (tp divides heads, hidden, ffn
// and vocab; pp divides layers; 2cp divides seq_len; sequence parallelism needs tp | seq_len/cp; the product
// is the world size), nibble-train's batch rule (global_batch divisible by micro_batch x dp), and for pp > 1 the
// layer split (parallel::assign_layers) and the schedule proven deadlock-free (parallel::check_schedule), as
// launch/train_config_validate.cpp does. Ranked by (fits in HBM, tokens/s).
#include <string>
#include <vector>

#include "plan/cluster.h"
#include "plan/efficiency.h"
#include "plan/layout.h"
#include "plan/memory_model.h"
#include "plan/model_spec.h"
#include "plan/step_time.h"

namespace nibble::plan {

struct SearchOptions {
  int gpus = 1;
  std::vector<int64_t> micro_batches = {1, 2, 4, 8};  // tried where they divide global_batch / dp
  std::vector<Recompute> recomputes = {Recompute::kNone, Recompute::kSelective, Recompute::kFull};
  bool try_sequence_parallel = true;  // tp > 1: with and without
  int max_tp = 0;                     // 0: no limit beyond the rules (tp beyond a node is allowed, and slow)
};

struct RankedLayout {
  Layout layout;
  MemoryBreakdown memory;
  StepTime time;
};

// The rules above; throws nibble::Error (InvalidArgument for the mesh and batch rules) naming what is broken.
void check_layout(const ModelSpec& model, const TrainingSpec& training, const Layout& layout);

std::vector<RankedLayout> rank_layouts(const ModelSpec& model, const TrainingSpec& training,
                                       const ClusterSpec& cluster, const SearchOptions& options,
                                       const Efficiency& efficiency = kFittedEfficiency);

// The layout as a nibble-train config section: [parallel] (tp, cp, dp, pp, sequence_parallel, pp_schedule)
// and the [train] micro_batch it assumes; a comment says when it needs recomputation, which nibble-train does
// not have yet.
std::string parallel_toml_section(const Layout& layout, const TrainingSpec& training);

}  // namespace nibble::plan
