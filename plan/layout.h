#pragma once
// One candidate way to run a step: the mesh (tp x cp x dp x pp, parallel/mesh.h's shape), the micro-batch,
// sequence parallelism and activation recomputation. The planner's models take a Layout next to the model and
// training descriptions; where they overlap (micro_batch, recompute, sequence_parallel) the Layout wins.
#include <cstdint>

#include "parallel/mesh.h"
#include "plan/model_spec.h"

namespace nibble::plan {

struct Layout {
  parallel::MeshShape mesh;
  int64_t micro_batch = 1;
  bool sequence_parallel = false;
  Recompute recompute = Recompute::kNone;

  int64_t gpus() const { return mesh.size(); }
  // Micro-batches each pipeline runs per step: global_batch / (micro_batch * dp).
  int64_t microbatches(const TrainingSpec& training) const { return training.global_batch / (micro_batch * mesh.dp); }
};

// The layout a TrainingSpec names on `mesh` (its micro_batch, sequence_parallel and recompute).
inline Layout layout_of(const TrainingSpec& training, const parallel::MeshShape& mesh) {
  return Layout{mesh, training.micro_batch, training.sequence_parallel && mesh.tp > 1, training.recompute};
}

}  // namespace nibble::plan
