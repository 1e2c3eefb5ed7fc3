#pragma once
// The achieved fractions of the cluster's peaks. These are the only fitted numbers of the planner: one set for
// every GPU, model and layout, fitted once against the published runs of plan/published_runs.h (`nibble-plan
// fit` re-runs the search; docs/PLAN.md has the table and each row's error). Peaks themselves come from spec
// sheets (plan/clusters/*.toml).
namespace nibble::plan {

struct Efficiency {
  double gemm = 0;     // fraction of the dense tensor-core peak that a transformer's GEMMs achieve
  double hbm = 0;      // fraction of HBM bandwidth that memory-bound kernels (norms, softmax, quantizers) achieve
  double network = 0;  // fraction of a link's bandwidth that NCCL collectives and p2p achieve
};

// Fitted by `nibble-plan fit` (grid search minimising the worst relative error over all published rows).
inline constexpr Efficiency kFittedEfficiency{0.75, 0.95, 0.75};

}  // namespace nibble::plan
