// The CPU BF16 GEMM (core/cpu/gemm_bf16.h) per micro-kernel and, for the Highway kernel "hwy", per Highway
// target this CPU runs (forced one at a time through precision's target selection, as the tests do): GFLOP/s
// of C = A · Bᵀ (2 M N K per second) and each hwy target's rate over the best target's (AVX-512 here), the
// ratio issue 17 asks about (AVX2 >= 0.6x AVX-512).
//
//   build/benchmarks/bench_gemm_targets [rounds=7] [--all]
//
// Rounds are interleaved (every contender once per round, so a burst of load from elsewhere hits them alike)
// and each contender reports its best round. The emulated targets (EMU128, SCALAR) take seconds per GEMM and
// run only with --all. Threads: OpenMP's default (OMP_NUM_THREADS).
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "benchmarks/target_rounds.h"
#include "core/cpu/gemm_bf16.h"
#include "precision/cpu/simd_targets.h"

namespace {

using nibble::core::cpu::GemmKernel;
namespace cpu = nibble::core::cpu;
namespace simd = nibble::precision::simd;

struct Shape {
  int64_t m, n, k;
};
constexpr Shape kShapes[] = {{2048, 2048, 2048}, {4096, 1024, 4096}};

std::vector<uint16_t> random_bf16(int64_t count, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal;
  std::vector<uint16_t> v(static_cast<size_t>(count));
  for (auto& x : v) {
    const float f = normal(gen);
    uint32_t u;
    std::memcpy(&u, &f, 4);
    x = static_cast<uint16_t>(u >> 16);  // truncation: any BF16 values will do
  }
  return v;
}

cpu::RowSource source(const std::vector<uint16_t>& m, int64_t cols) {
  return [&m, cols](int64_t r0, int64_t nr, int64_t k0, int64_t kc, uint16_t* out, int64_t ld) {
    for (int64_t r = 0; r < nr; ++r) std::memcpy(out + r * ld, m.data() + (r0 + r) * cols + k0, static_cast<size_t>(kc) * 2);
  };
}

struct Contender {
  std::string name;
  GemmKernel kernel;
  int64_t target;  // the forced Highway target (0: none forced)
  double best = 1e30;
};

}  // namespace

int main(int argc, char** argv) {
  const auto [rounds, all] = nibble::bench::parse_target_rounds(argc, argv, 7);
  std::vector<Contender> base;
  for (GemmKernel k : {GemmKernel::kFma32, GemmKernel::kDpbf16})
    if (cpu::gemm_kernel_available(k)) base.push_back({cpu::gemm_kernel_name(k), k, 0});
  const std::vector<int64_t> targets = nibble::bench::bench_targets(all);
  for (const int64_t t : targets) base.push_back({std::string("hwy/") + simd::target_name(t), GemmKernel::kHwy, t});
  std::printf("threads %d, default kernel %s, best of %d interleaved rounds\n", omp_get_max_threads(),
              cpu::gemm_kernel_name(cpu::gemm_default_kernel()), rounds);
  for (const Shape& s : kShapes) {
    const std::vector<uint16_t> a = random_bf16(s.m * s.k, 1), b = random_bf16(s.n * s.k, 2);
    std::vector<float> c(static_cast<size_t>(s.m * s.n));
    std::vector<Contender> runs = base;
    auto run = [&](const Contender& x) {
      simd::force_target(x.target);
      const auto t0 = std::chrono::steady_clock::now();
      cpu::gemm_bf16_tn(s.m, s.n, s.k, source(a, s.k), source(b, s.k), c.data(), s.n, 1.0f, x.kernel);
      const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      simd::force_target(0);
      return t;
    };
    for (auto& x : runs) run(x);  // warm-up: workspace, page faults
    for (int r = 0; r < rounds; ++r)
      for (auto& x : runs) x.best = std::min(x.best, run(x));
    const double flop = 2.0 * static_cast<double>(s.m) * static_cast<double>(s.n) * static_cast<double>(s.k);
    double best_hwy = 1e30;
    for (const auto& x : runs)
      if (x.kernel == GemmKernel::kHwy && x.target == targets.front()) best_hwy = x.best;
    std::printf("%lldx%lldx%lld\n", static_cast<long long>(s.m), static_cast<long long>(s.n), static_cast<long long>(s.k));
    for (const auto& x : runs) {
      std::printf("  %-12s %8.2f ms %7.1f GFLOP/s", x.name.c_str(), x.best * 1e3, flop / x.best / 1e9);
      if (x.kernel == GemmKernel::kHwy) std::printf("  %5.2fx hwy/%s", best_hwy / x.best, simd::target_name(targets.front()));
      std::printf("\n");
    }
    std::fflush(stdout);
  }
  return 0;
}
