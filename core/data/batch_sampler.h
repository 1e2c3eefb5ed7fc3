#pragma once
// Deterministic batches from a token file. Global batch `step` is `global_batch` windows of seq_len + 1
// tokens whose start offsets are a pure function of (seed, step, sample index) (splitmix64), so:
//  - every layout sees the same global batches: dp rank r takes samples [r * B/dp, (r+1) * B/dp), and
//    micro-batch m of it the next micro_batch of those;
//  - the data position is just the step: resuming at step s needs no loader state.
// Eval batches are fixed windows laid end to end over the held-out split (wrapping around).
#include <torch/torch.h>

#include <cstdint>

#include "core/data/token_file.h"

namespace nibble::core::data {

struct Batch {
  torch::Tensor tokens, targets;  // int64 [count, seq_len]; targets are tokens shifted by one
};

class BatchSampler {
 public:
  // Throws InvalidArgument when the file is shorter than one window.
  BatchSampler(const TokenFile& file, int64_t seq_len, uint64_t seed);

  // Samples [first, first + count) of training batch `step`.
  Batch train_batch(int64_t step, int64_t first, int64_t count) const;
  // Samples [first, first + count) of eval batch `index` (windows (index * per_batch + j) * seq_len).
  Batch eval_batch(int64_t index, int64_t per_batch, int64_t first, int64_t count) const;
  int64_t window_start(int64_t step, int64_t sample) const;  // exposed for tests

 private:
  Batch gather(const std::vector<int64_t>& starts) const;
  const TokenFile& file_;
  int64_t seq_len_;
  uint64_t seed_;
};

}  // namespace nibble::core::data
