#include "core/data/batch_sampler.h"

#include <vector>

#include "precision/error.h"

namespace nibble::core::data {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

BatchSampler::BatchSampler(const TokenFile& file, int64_t seq_len, uint64_t seed)
    : file_(file), seq_len_(seq_len), seed_(seed) {
  if (file.size() < seq_len + 2)
    throw InvalidArgument("token file '" + file.path() + "' has " + std::to_string(file.size()) +
                          " tokens, fewer than one window of model.seq_len + 1 = " + std::to_string(seq_len + 1));
}

int64_t BatchSampler::window_start(int64_t step, int64_t sample) const {
  const uint64_t h = splitmix64(splitmix64(splitmix64(seed_) ^ static_cast<uint64_t>(step)) ^
                                static_cast<uint64_t>(sample));
  return static_cast<int64_t>(h % static_cast<uint64_t>(file_.size() - seq_len_ - 1));
}

Batch BatchSampler::gather(const std::vector<int64_t>& starts) const {
  const auto n = static_cast<int64_t>(starts.size());
  torch::Tensor window = torch::empty({n, seq_len_ + 1}, torch::kInt64);
  int64_t* out = window.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j <= seq_len_; ++j) out[i * (seq_len_ + 1) + j] = file_.data()[starts[static_cast<size_t>(i)] + j];
  return {window.narrow(1, 0, seq_len_).contiguous(), window.narrow(1, 1, seq_len_).contiguous()};
}

Batch BatchSampler::train_batch(int64_t step, int64_t first, int64_t count) const {
  std::vector<int64_t> starts;
  for (int64_t i = first; i < first + count; ++i) starts.push_back(window_start(step, i));
  return gather(starts);
}

Batch BatchSampler::eval_batch(int64_t index, int64_t per_batch, int64_t first, int64_t count) const {
  const int64_t windows = (file_.size() - 1) / seq_len_;  // whole windows that fit (targets need one more)
  std::vector<int64_t> starts;
  for (int64_t i = first; i < first + count; ++i) {
    int64_t start = ((index * per_batch + i) % windows) * seq_len_;
    if (start + seq_len_ + 1 > file_.size()) start = file_.size() - seq_len_ - 1;
    starts.push_back(start);
  }
  return gather(starts);
}

}  // namespace nibble::core::data
