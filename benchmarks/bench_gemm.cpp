// CPU GEMM throughput: nibble's GEMM (dense BF16, FP8 E4M3 per-tensor, NVFP4, MXFP8 operands) against
// torch's BF16 and FP32 matmul, same shapes, same threads (2 unless NIBBLE_BENCH_THREADS says otherwise).
// C = A · Bᵀ with A (M, K), B (N, K); the counter GFLOP/s is 2 M N K per second.
//
//   build/benchmarks/bench_gemm --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
//   build/benchmarks/bench_gemm --interleaved=10   (all contenders in turn, best of 10 each, with ratios)
//
// The machine may be shared: compare the max (or the median) over repetitions, never a single run.
#include <benchmark/benchmark.h>
#include <sys/resource.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "core/gemm.h"
#include "precision/quantize.h"

namespace {

using namespace nibble;

struct Shape {
  int64_t m, n, k;
};
constexpr Shape kShapes[] = {{2048, 2048, 2048}, {4096, 4096, 1024}, {4096, 1024, 4096}};

struct Operands {
  torch::Tensor a, b;  // float32
  torch::Tensor a16, b16;
  std::map<std::string, std::pair<core::QuantizedTensor, core::QuantizedTensor>> quantized;
};

Operands& operands(const Shape& s) {
  static std::map<int64_t, std::unique_ptr<Operands>> cache;
  auto& slot = cache[(s.m * 100003 + s.n) * 100003 + s.k];
  if (!slot) {
    slot = std::make_unique<Operands>();
    torch::manual_seed(0);
    slot->a = torch::randn({s.m, s.k});
    slot->b = torch::randn({s.n, s.k});
    slot->a16 = slot->a.to(torch::kBFloat16);
    slot->b16 = slot->b.to(torch::kBFloat16);
  }
  return *slot;
}

precision::QuantizeOptions options_for(const std::string& scheme) {
  precision::Format f;
  precision::QuantizeOptions o = precision::default_options(precision::parse_scheme(scheme, &f));
  o.element = f;
  return o;
}

void finish(benchmark::State& state, const Shape& s) {
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * s.m * s.n * s.k, benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1000);
}

void BM_torch_bf16(benchmark::State& state, Shape s) {
  Operands& o = operands(s);
  for (auto _ : state) benchmark::DoNotOptimize(torch::matmul(o.a16, o.b16.t()));
  finish(state, s);
}

void BM_torch_fp32(benchmark::State& state, Shape s) {
  Operands& o = operands(s);
  for (auto _ : state) benchmark::DoNotOptimize(torch::matmul(o.a, o.b.t()));
  finish(state, s);
}

void BM_nibble(benchmark::State& state, Shape s, std::string scheme) {
  Operands& o = operands(s);
  core::GemmOperand a, b;
  const precision::QuantizeOptions opt = scheme == "bf16" ? precision::QuantizeOptions{} : options_for(scheme);
  if (scheme == "bf16") {
    a = core::GemmOperand::high_precision(o.a16);
    b = core::GemmOperand::high_precision(o.b16);
  } else {
    auto it = o.quantized.find(scheme);
    if (it == o.quantized.end())
      it = o.quantized.emplace(scheme, std::make_pair(core::quantize(o.a, opt), core::quantize(o.b, opt))).first;
    a = core::GemmOperand::quantized(*it->second.first.rowwise, opt);
    b = core::GemmOperand::quantized(*it->second.second.rowwise, opt);
  }
  for (auto _ : state) benchmark::DoNotOptimize(core::gemm(a, b));
  finish(state, s);
}

std::string shape_name(const Shape& s) {
  return std::to_string(s.m) + "x" + std::to_string(s.n) + "x" + std::to_string(s.k);
}

int register_all() {
  for (const Shape& s : kShapes) {
    const std::string n = shape_name(s);
    benchmark::RegisterBenchmark(("torch_bf16/" + n).c_str(), BM_torch_bf16, s)->Unit(benchmark::kMillisecond)->UseRealTime();
    benchmark::RegisterBenchmark(("torch_fp32/" + n).c_str(), BM_torch_fp32, s)->Unit(benchmark::kMillisecond)->UseRealTime();
    for (const char* scheme : {"bf16", "fp8_tensor", "nvfp4", "mxfp8"})
      benchmark::RegisterBenchmark(("nibble_" + std::string(scheme) + "/" + n).c_str(), BM_nibble, s, std::string(scheme))
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
  }
  return 0;
}

double cpu_seconds() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + 1e-6 * (u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// --interleaved[=R]: R rounds, each timing every contender once per shape in turn (so a burst of load from
// elsewhere hits all of them alike); prints the best time of each and the ratios the issue asks about.
int run_interleaved(int rounds) {
  const char* schemes[] = {"bf16", "fp8_tensor", "nvfp4", "mxfp8"};
  for (const Shape& s : kShapes) {
    Operands& o = operands(s);
    std::map<std::string, std::function<void()>> runs;
    runs["torch_bf16"] = [&] { torch::matmul(o.a16, o.b16.t()); };
    runs["torch_fp32"] = [&] { torch::matmul(o.a, o.b.t()); };
    std::map<std::string, std::pair<core::GemmOperand, core::GemmOperand>> ops;
    for (const char* scheme : schemes) {
      if (std::string(scheme) == "bf16") {
        ops[scheme] = {core::GemmOperand::high_precision(o.a16), core::GemmOperand::high_precision(o.b16)};
      } else {
        const precision::QuantizeOptions opt = options_for(scheme);
        auto& q = o.quantized.emplace(scheme, std::make_pair(core::quantize(o.a, opt), core::quantize(o.b, opt)))
                      .first->second;
        ops[scheme] = {core::GemmOperand::quantized(*q.first.rowwise, opt),
                       core::GemmOperand::quantized(*q.second.rowwise, opt)};
      }
      runs[std::string("nibble_") + scheme] = [&ops, scheme] { core::gemm(ops[scheme].first, ops[scheme].second); };
    }
    std::map<std::string, double> best, best_cpu;
    for (auto& [name, f] : runs) f(), best[name] = best_cpu[name] = 1e30;  // warm-up
    for (int r = 0; r < rounds; ++r)
      for (auto& [name, f] : runs) {
        const double c0 = cpu_seconds();
        const auto t0 = std::chrono::steady_clock::now();
        f();
        best[name] = std::min(best[name], std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        best_cpu[name] = std::min(best_cpu[name], cpu_seconds() - c0);
      }
    const double flop = 2.0 * s.m * s.n * s.k;
    std::printf("%s (best of %d; cpu = CPU time of all threads, spinning included)\n", shape_name(s).c_str(), rounds);
    for (auto& [name, t] : best)
      std::printf("  %-18s %8.2f ms %7.1f GFLOP/s  %5.2fx torch bf16  %5.2fx torch fp32 | cpu %8.2f ms  %5.2fx torch bf16\n",
                  name.c_str(), t * 1e3, flop / t / 1e9, best["torch_bf16"] / t, best["torch_fp32"] / t,
                  best_cpu[name] * 1e3, best_cpu["torch_bf16"] / best_cpu[name]);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const char* t = std::getenv("NIBBLE_BENCH_THREADS");
  torch::set_num_threads(t ? std::atoi(t) : 2);
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--interleaved", 0) == 0) return run_interleaved(arg.size() > 14 ? std::atoi(arg.c_str() + 14) : 10);
  }
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
