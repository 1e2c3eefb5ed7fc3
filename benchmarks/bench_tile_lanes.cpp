// The Highway kernels of the CPU tile pass (precision/cpu/block_amax_lanes.h, transpose_lanes.h,
// quantize_rht_lanes.h, quantize_quest_lanes.h) forced
// onto each Highway target this CPU runs, on one 128 x 128 float32 tile (64 KiB, cache-resident: the kernels'
// own speed, not memory's), in GB/s of float32 read. `vs_best` is a row's rate over the best target's rate
// for the same kernel, measured just before it in the same run (the goal: AVX2 >= 0.6 x AVX-512).
// `vs_best_paired` is the same ratio measured after the row, in short alternating bursts (the best target,
// then this one, 64 times; the median of the 64 ratios), so that a change in the machine's load between the
// two rows (other jobs on a shared machine, a busy hyperthread sibling) does not land on one side only.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#if defined(NIBBLE_HAVE_HWY) && NIBBLE_HAVE_HWY
#include "precision/cpu/block_amax_lanes.h"
#include "precision/cpu/quantize_quest_lanes.h"
#include "precision/cpu/quantize_rht_lanes.h"
#include "precision/cpu/simd_targets.h"
#include "precision/cpu/transpose_lanes.h"
#endif

namespace {

#if defined(NIBBLE_HAVE_HWY) && NIBBLE_HAVE_HWY
constexpr int64_t kRows = 128, kCols = 128;
constexpr double kTileBytes = kRows * kCols * sizeof(float);

// Normal activations: every RHT group within the butterfly's exactness bound but the odd one (the
// quantizers' usual case).
const std::vector<float>& tile() {
  static const std::vector<float> x = [] {
    std::vector<float> v(kRows * kCols);
    std::mt19937 gen(5);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    for (auto& e : v) e = dist(gen);
    return v;
  }();
  return x;
}

using Kernel = std::function<void()>;

// One kernel on one forced target; the best target's row of a kernel runs first, the others report their
// rate over it.
// Seconds per call of body on the current target: a warm-up call, then `calls` timed ones.
double seconds_per_call(const Kernel& body, int calls) {
  body();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < calls; ++i) body();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / calls;
}

// Median over `pairs` bursts of t(best target) / t(target), the two bursts of a pair back to back.
double paired_ratio(const Kernel& body, int64_t target, int64_t best_target, int pairs = 64, int calls = 4) {
  std::vector<double> ratios;
  for (int p = 0; p < pairs; ++p) {
    nibble::precision::simd::force_target(best_target);
    const double t_best = seconds_per_call(body, calls);
    nibble::precision::simd::force_target(target);
    ratios.push_back(t_best / seconds_per_call(body, calls));
  }
  nibble::precision::simd::force_target(0);
  std::nth_element(ratios.begin(), ratios.begin() + pairs / 2, ratios.end());
  return ratios[pairs / 2];
}

void BM_TileLanes(benchmark::State& state, int64_t target, const std::string& kernel, const Kernel& body,
                  int64_t best_target) {
  const bool best = target == best_target;
  static std::map<std::string, double> best_rate;
  nibble::precision::simd::force_target(target);
  if (nibble::precision::simd::current_target() != target) state.SkipWithError("target not selected");
  size_t iterations = 0;
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    body();
    ++iterations;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  nibble::precision::simd::force_target(0);
  const double rate = iterations * kTileBytes / seconds;
  state.SetBytesProcessed(static_cast<int64_t>(iterations * kTileBytes));
  state.counters["GBps"] = rate / 1e9;
  // The library calls this several times per row (growing iteration counts); the last call is the one reported.
  if (best) best_rate[kernel] = rate;
  state.counters["vs_best"] = rate / best_rate[kernel];
  state.counters["vs_best_paired"] = best ? 1.0 : paired_ratio(body, target, best_target);
}

void register_rows() {
  using namespace nibble::precision;
  static std::vector<float> out(kRows * kCols);
  static std::vector<uint8_t> codes(kCols);
  static bool nan = false;
  const float* x = tile().data();
  const uint32_t signs = 0xA5C3u;
  const std::vector<std::pair<std::string, Kernel>> kernels = {
      {"abs_max", [x] { benchmark::DoNotOptimize(abs_max_lanes(x, kRows * kCols, &nan)); }},
      {"block_amaxes/16",
       [x] {
         span128_block_amaxes_lanes(x, kCols, kRows, 16, out.data(), &nan);
         benchmark::DoNotOptimize(out.data());
       }},
      {"block_amaxes/32",
       [x] {
         span128_block_amaxes_lanes(x, kCols, kRows, 32, out.data(), &nan);
         benchmark::DoNotOptimize(out.data());
       }},
      {"multiply_blocks/16",
       [x] {
         multiply_blocks_rows_lanes(x, kCols, kRows, kCols, 16, x, out.data(), kCols);  // (any multipliers)
         benchmark::DoNotOptimize(out.data());
       }},
      {"transpose",
       [x] {
         transpose_floats_lanes(x, kCols, kRows, kCols, out.data(), kRows);
         benchmark::DoNotOptimize(out.data());
       }},
      {"rht16_rows",
       [x, signs] {
         for (int64_t g = 0; g < kRows; g += 16) rht16_rows(x + g * kCols, kCols, kCols, signs, out.data() + g * kCols, kCols);
         benchmark::DoNotOptimize(out.data());
       }},
      {"rht16_rows_amax",
       [x, signs] {
         float in_m = 0.0f, out_m = 0.0f;
         for (int64_t g = 0; g < kRows; g += 16) rht16_rows_amax(x + g * kCols, kCols, kCols, signs, &in_m, &out_m);
         benchmark::DoNotOptimize(out_m);
       }},
      {"quest_rows",
       [x] {
         QuestInputStats input;
         for (int64_t g = 0; g < kRows; g += 32)
           quest_rows(x + g * kCols, kCols, kCols, out.data() + g * kCols, kCols, codes.data(), &input);
         benchmark::DoNotOptimize(out.data());
         benchmark::DoNotOptimize(input.amax);
       }},
  };
  const std::vector<int64_t> targets = simd::runnable_targets();
  for (const auto& [kernel, body] : kernels)
    for (const int64_t target : targets) {
      const std::string name = "BM_TileLanes/" + kernel + "/" + simd::target_name(target);
      benchmark::RegisterBenchmark(name.c_str(), BM_TileLanes, target, kernel, body, targets.front())
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);
    }
}
#endif

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
#if defined(NIBBLE_HAVE_HWY) && NIBBLE_HAVE_HWY
  register_rows();
#endif
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
