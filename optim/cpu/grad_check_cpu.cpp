// Gradient check before a step: one read of every gradient for the global norm and NaN/Inf detection.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "optim/grad_check.h"
#include "precision/convert.h"
#include "precision/error.h"
#include "precision/format.h"

namespace nibble::optim {
namespace {

constexpr int64_t kChunk = 16384;

struct ChunkResult {
  double sum_squares = 0.0;
  int64_t first_bad = -1;  // element index inside the gradient
};

template <class Load>
ChunkResult scan(int64_t begin, int64_t end, Load load) {
  ChunkResult r;
  // Squares of FP32 values are exact in double; a 16-way split keeps the adds independent (vectorisable)
  // and the order fixed.
  double lanes[16] = {};
  bool bad = false;
  for (int64_t i = begin; i < end; ++i) {
    const float x = load(i);
    bad |= !std::isfinite(x);
    lanes[i % 16] += static_cast<double>(x) * static_cast<double>(x);
  }
  for (double l : lanes) r.sum_squares += l;
  if (bad)
    for (int64_t i = begin; i < end; ++i)
      if (!std::isfinite(load(i))) {
        r.first_bad = i;
        break;
      }
  return r;
}

}  // namespace

GradientReport check_gradients(std::span<const GradientView> grads) {
  struct Item {
    size_t grad;
    int64_t begin, end;
  };
  std::vector<Item> items;
  for (size_t g = 0; g < grads.size(); ++g) {
    if (grads[g].numel > 0 && !grads[g].data)
      throw InvalidArgument("gradient check: gradient " + std::to_string(g) + " has no data");
    for (int64_t b = 0; b < grads[g].numel; b += kChunk) items.push_back({g, b, std::min(grads[g].numel, b + kChunk)});
  }
  std::vector<ChunkResult> results(items.size());
  // A thread per 256K elements at most: smaller reads finish before a parallel region pays off.
  int64_t total = 0;
  for (const GradientView& g : grads) total += g.numel;
  const int threads = static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>((total + (int64_t{1} << 18) - 1) >> 18, precision::num_threads())));
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (size_t w = 0; w < items.size(); ++w) {
    const Item& it = items[w];
    const GradientView& g = grads[it.grad];
    if (g.type == ElementType::kFloat32) {
      const float* p = static_cast<const float*>(g.data);
      results[w] = scan(it.begin, it.end, [p](int64_t i) { return p[i]; });
    } else {
      const uint16_t* p = static_cast<const uint16_t*>(g.data);
      results[w] =
          scan(it.begin, it.end, [p](int64_t i) { return precision::bits_float(static_cast<uint32_t>(p[i]) << 16); });
    }
  }
  GradientReport report;
  for (size_t w = 0; w < items.size(); ++w) {
    report.sum_squares += results[w].sum_squares;
    if (report.first_nonfinite < 0 && results[w].first_bad >= 0) {
      report.first_nonfinite = static_cast<int64_t>(items[w].grad);
      report.nonfinite_element = results[w].first_bad;
    }
  }
  return report;
}

}  // namespace nibble::optim
