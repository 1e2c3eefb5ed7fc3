#include "core/model/sharded_init.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>

#include "precision/error.h"

namespace nibble::core::model {
namespace {

constexpr int64_t kBlock = 16;             // at::normal's Box-Muller block
constexpr int64_t kChunk = kBlock * 4096;  // elements drawn per call: 256 KiB of floats

}  // namespace

torch::Tensor sharded_normal(uint64_t seed, double std, const std::vector<int64_t>& full_shape, int shard_dim,
                             int64_t parts, int64_t index) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat32);
  int64_t n = 1;
  for (int64_t d : full_shape) n *= d;
  // Under 16 elements at::normal draws element by element (with a cached second normal): drawn whole, it is tiny.
  if (shard_dim < 0 || parts == 1 || n < kBlock) {
    torch::Tensor full = at::normal(0.0, std, full_shape, gen, f32);
    if (shard_dim < 0 || parts == 1) return full;
    const int64_t part = full_shape.at(static_cast<size_t>(shard_dim)) / parts;
    return full.narrow(shard_dim, index * part, part).contiguous().clone();
  }
  const int64_t extent = full_shape.at(static_cast<size_t>(shard_dim));
  if (parts < 1 || extent % parts != 0 || index < 0 || index >= parts)
    throw InvalidArgument("sharded_normal: shard " + std::to_string(index) + " of " + std::to_string(parts) +
                          " along dim " + std::to_string(shard_dim) + " of shape " +
                          c10::str(c10::IntArrayRef(full_shape)) + " (the parts must divide the dim)");
  // The full tensor as [A, D, B] around shard_dim: the shard is A runs of part·B elements, run a starting at
  // a·D·B + index·part·B in the full tensor and at a·part·B in the shard.
  int64_t inner = 1;
  for (size_t d = static_cast<size_t>(shard_dim) + 1; d < full_shape.size(); ++d) inner *= full_shape[d];
  const int64_t part = extent / parts, row = extent * inner, run = part * inner;
  std::vector<int64_t> shape = full_shape;
  shape[static_cast<size_t>(shard_dim)] = part;
  torch::Tensor out = torch::empty(shape, f32);
  float* dst = out.data_ptr<float>();
  // Copies the full tensor's elements [c0, c1), given as `values`, into the shard where they belong.
  auto take = [&](const float* values, int64_t c0, int64_t c1) {
    for (int64_t a = c0 / row; a * row < c1; ++a) {
      const int64_t r0 = a * row + index * run;
      const int64_t lo = std::max(c0, r0), hi = std::min(c1, r0 + run);
      if (lo < hi) std::copy(values + (lo - c0), values + (hi - c0), dst + a * run + (lo - r0));
    }
  };
  auto wanted = [&](int64_t c0, int64_t c1) {  // whether [c0, c1) holds any of the shard
    for (int64_t a = c0 / row; a * row < c1; ++a)
      if (std::max(c0, a * row + index * run) < std::min(c1, a * row + index * run + run)) return true;
    return false;
  };
  at::CPUGeneratorImpl* engine = gen.get<at::CPUGeneratorImpl>();
  const int64_t body = n - n % kBlock;  // whole blocks; the rest is the redrawn last 16 (below)
  for (int64_t c0 = 0; c0 < body; c0 += kChunk) {
    const int64_t c1 = std::min(body, c0 + kChunk);
    if (wanted(c0, c1)) {
      const torch::Tensor x = at::normal(0.0, std, {c1 - c0}, gen, f32);
      take(x.data_ptr<float>(), c0, c1);
    } else {
      for (int64_t i = c0; i < c1; ++i) engine->random();  // one 32-bit draw per float uniform, as at::normal
    }
  }
  if (n % kBlock != 0) {
    for (int64_t i = body; i < n; ++i) engine->random();  // the uniforms the redraw below replaces
    const torch::Tensor x = at::normal(0.0, std, {kBlock}, gen, f32);
    take(x.data_ptr<float>(), n - kBlock, n);
  }
  return out;
}

}  // namespace nibble::core::model
