#include "launch/micro_batches.h"

#include "launch/model_layout.h"

namespace nibble::launch {

MicroBatches step_batches(const TrainConfig& c, const core::data::BatchSampler& train, const parallel::Mesh& mesh,
                          int64_t step, const torch::Device& device) {
  const int64_t per_dp = c.global_batch / c.dp;
  MicroBatches out;
  for (int64_t first = 0; first < per_dp; first += c.micro_batch) {
    core::data::Batch b = train.train_batch(step, mesh.coord().dp * per_dp + first, c.micro_batch);
    out.tokens.push_back(context_parallel_part(b.tokens, mesh).to(device));
    out.targets.push_back(context_parallel_part(b.targets, mesh).to(device));
    out.streams.push_back(static_cast<uint64_t>(step * c.global_batch + mesh.coord().dp * per_dp + first) + 1);
  }
  return out;
}

}  // namespace nibble::launch
