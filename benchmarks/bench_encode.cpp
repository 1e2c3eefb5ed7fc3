// Element-format encode (and decode) throughput on 64 Mi float32 values, in GB/s of float32 read (written),
// beside a memcpy of the same bytes measured first in the same run; `vs_memcpy` is the ratio of the rates.
// BM_EncodeLanes: the RNE lanes (precision/cpu/encode_rne_lanes.h) forced onto each Highway target this CPU
// runs, on 16 Ki floats (cache-resident: the kernel's own speed) and on the 64 Mi (memory-bound);
// `vs_best` is the rate over the best target's, measured just before in the same run.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "precision/convert.h"
#include "precision/cpu/encode_rne_lanes.h"
#include "precision/cpu/simd_targets.h"

namespace {

using nibble::precision::EncodeOptions;
using nibble::precision::Format;
using nibble::precision::Rounding;
namespace formats = nibble::precision::formats;

constexpr size_t kElements = size_t{64} << 20;
constexpr double kInputBytes = static_cast<double>(kElements * sizeof(float));
double g_memcpy_rate = 0.0;  // bytes per second, set by BM_Memcpy

const std::vector<float>& input() {
  static const std::vector<float> x = [] {
    std::vector<float> v(kElements);
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.0f, 50.0f);
    for (auto& e : v) e = normal(rng);
    return v;
  }();
  return x;
}

// Runs `body` under the benchmark loop and reports the input-read rate; returns it in bytes per second.
double timed(benchmark::State& state, const std::function<void()>& body, double input_bytes = kInputBytes) {
  size_t iterations = 0;
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    body();
    benchmark::ClobberMemory();
    ++iterations;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double rate = iterations * input_bytes / seconds;
  state.SetBytesProcessed(static_cast<int64_t>(iterations * input_bytes));
  state.counters["GBps"] = rate / 1e9;
  if (g_memcpy_rate > 0) state.counters["vs_memcpy"] = rate / g_memcpy_rate;
  return rate;
}

void BM_Memcpy(benchmark::State& state) {
  const auto& x = input();
  std::vector<float> out(x.size());
  g_memcpy_rate = timed(state, [&] {
    std::memcpy(out.data(), x.data(), x.size() * sizeof(float));
    benchmark::DoNotOptimize(out.data());
  });
}

void BM_Encode(benchmark::State& state, Format fmt, Rounding rounding) {
  const auto& x = input();
  std::vector<uint8_t> codes(nibble::precision::encoded_bytes(fmt, x.size()));
  EncodeOptions opt;
  opt.rounding = rounding;
  opt.seed = 7;
  timed(state, [&] {
    nibble::precision::encode_f32(x.data(), x.size(), fmt, opt, codes.data());
    benchmark::DoNotOptimize(codes.data());
  });
}

// Decoding the same tensor back: the rate counts the float32 bytes written, so it compares with memcpy too.
void BM_Decode(benchmark::State& state, Format fmt) {
  const auto& x = input();
  std::vector<uint8_t> codes(nibble::precision::encoded_bytes(fmt, x.size()));
  nibble::precision::encode_f32(x.data(), x.size(), fmt, EncodeOptions{}, codes.data());
  std::vector<float> out(x.size());
  timed(state, [&] {
    nibble::precision::decode_to_f32(codes.data(), x.size(), fmt, out.data());
    benchmark::DoNotOptimize(out.data());
  });
}

#if NIBBLE_HAVE_RNE_LANES
// The lanes on one forced target; the best target's row of a (format, size) runs first, the others report
// their rate over it.
void BM_EncodeLanes(benchmark::State& state, int64_t target, nibble::precision::RneLanesFormat fmt, size_t n,
                    const std::string& key, bool best) {
  static std::map<std::string, double> best_rate;
  const auto& x = input();
  std::vector<uint8_t> codes(n);
  nibble::precision::simd::force_target(target);
  if (nibble::precision::simd::current_target() != target) state.SkipWithError("target not selected");
  const double rate = timed(
      state,
      [&] {
        nibble::precision::encode_rne_lanes_dispatch(fmt, false, x.data(), n, 1.0f, codes.data());
        benchmark::DoNotOptimize(codes.data());
      },
      static_cast<double>(n * sizeof(float)));
  nibble::precision::simd::force_target(0);
  // The library calls this several times per row (growing iteration counts); the last call is the one reported.
  if (best) best_rate[key] = rate;
  state.counters["vs_best"] = rate / best_rate[key];
}

// One row per runnable target (known only at run time), best first, per format and size.
void register_lanes_rows() {
  using nibble::precision::RneLanesFormat;
  const std::vector<int64_t> targets = nibble::precision::simd::runnable_targets();
  for (const auto& [fmt, fname] : {std::pair{RneLanesFormat::kE4M3, "e4m3"}, std::pair{RneLanesFormat::kE2M1, "e2m1"}})
    for (const auto& [n, size] : {std::pair{size_t{16} << 10, "16Ki"}, std::pair{kElements, "64Mi"}})
      for (const int64_t target : targets) {
        const std::string key = std::string(fname) + "/" + size;
        const std::string name =
            "BM_EncodeLanes/" + key + "/" + nibble::precision::simd::target_name(target);
        auto* b = benchmark::RegisterBenchmark(name.c_str(), BM_EncodeLanes, target, fmt, n, key,
                                                target == targets.front());
        b->UseRealTime()->Unit(n == kElements ? benchmark::kMillisecond : benchmark::kMicrosecond);
      }
}
#endif

}  // namespace

BENCHMARK(BM_Memcpy)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Encode, e4m3_rne, formats::kE4M3, Rounding::kNearestEven)
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Encode, e4m3_stochastic, formats::kE4M3, Rounding::kStochastic)
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Encode, e2m1_rne, formats::kE2M1, Rounding::kNearestEven)
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Encode, e2m1_stochastic, formats::kE2M1, Rounding::kStochastic)
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Decode, e4m3, formats::kE4M3)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_Decode, e2m1, formats::kE2M1)->Unit(benchmark::kMillisecond)->UseRealTime();

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
#if NIBBLE_HAVE_RNE_LANES
  register_lanes_rows();
#endif
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
