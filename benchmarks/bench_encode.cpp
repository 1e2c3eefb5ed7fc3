// Element-format encode (and decode) throughput on 64 Mi float32 values, in GB/s of float32 read (written),
// beside a memcpy of the same bytes measured first in the same run; `vs_memcpy` is the ratio of the rates.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

#include "precision/convert.h"

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
double timed(benchmark::State& state, const std::function<void()>& body) {
  size_t iterations = 0;
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    body();
    benchmark::ClobberMemory();
    ++iterations;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double rate = iterations * kInputBytes / seconds;
  state.SetBytesProcessed(static_cast<int64_t>(iterations * kInputBytes));
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
BENCHMARK_MAIN();
