#include "parallel/nn/global_clip.h"

#include <cmath>

#include "optim/torch/grad_norm.h"
#include "precision/error.h"

namespace nibble::parallel::nn {
namespace {

// FP64 sum over each group in turn (a group of one rank adds nothing: no call).
double sum_over_groups(double value, const std::vector<Communicator*>& groups) {
  for (Communicator* group : groups) {
    if (!group) throw InvalidArgument("global_grad_norm: a null group in sum_over");
    if (group->size() > 1) group->all_reduce(std::span<double>(&value, 1), ReduceOp::kSum);
  }
  return value;
}

}  // namespace

double global_grad_norm(const std::vector<GradNormPart>& parts, const std::vector<Communicator*>& sum_over) {
  double total = 0.0;
  for (const GradNormPart& part : parts) total += sum_over_groups(optim::grad_sum_squares(part.grads), part.sum_over);
  return std::sqrt(sum_over_groups(total, sum_over));
}

}  // namespace nibble::parallel::nn
