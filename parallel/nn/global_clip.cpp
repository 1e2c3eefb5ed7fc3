#include "parallel/nn/global_clip.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "precision/error.h"

namespace nibble::parallel {

double global_grad_norm_squared(double local_sum_squares, const std::vector<Communicator*>& sum_over) {
  double total = local_sum_squares;
  for (Communicator* group : sum_over) {
    if (!group) throw InvalidArgument("global_grad_norm_squared: a null group in sum_over");
    group->all_reduce(std::span<double>(&total, 1), ReduceOp::kSum);
  }
  return total;
}

float clip_coefficient(double norm, double max_norm) {
  if (!(max_norm > 0.0))
    throw InvalidArgument("clip_coefficient: max_norm must be > 0, got " + std::to_string(max_norm));
  if (!std::isfinite(norm)) return 0.0f;
  return static_cast<float>(std::min(1.0, max_norm / (norm + 1e-6)));
}

}  // namespace nibble::parallel
