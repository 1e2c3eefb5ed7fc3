// The codec kernels moved to Highway for issue 17 item 6 (vector code on every CPU), per forced Highway
// target this CPU runs, against the build's own path (the AVX-512 lanes that stay where they are faster):
//   - int8 (dynamic-map) optimizer states: bucket-search encode, decode (optim/cpu/dynamic_map_hwy.h);
//   - fp8 optimizer states: E4M3 decode (optim/cpu/e4m3_decode_hwy.h);
//   - the GEMM's operand decode to BF16 (core/cpu/decode_bf16.h): 8-bit codes without and with block folds
//     (FP8 per-tensor / MXFP8), 4-bit codes with E4M3 folds (NVFP4).
// Each kernel runs on 4096 elements in L1 (the kernels' own speed, not memory's), 64 calls per sample, in
// G elements/s; contenders are interleaved round by round (a burst of load from elsewhere hits them alike)
// and each keeps its best round. `vs AVX-512` is a row's rate over the best AVX-512 row of the same kernel
// (the build's lanes or hwy/AVX3): the goal is AVX2 >= 0.6x.
//
//   build-dir/benchmarks/bench_codec_targets [rounds=21] [--all]   (--all: the emulated targets too)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "benchmarks/target_rounds.h"
#include "core/cpu/decode_bf16.h"
#include "optim/cpu/dynamic_map_buckets.h"
#include "optim/cpu/dynamic_map_hwy.h"
#include "optim/cpu/dynamic_map_lanes.h"
#include "optim/cpu/e4m3_decode_hwy.h"
#include "optim/dynamic_map.h"
#include "precision/cpu/simd_targets.h"
#include "precision/format.h"

namespace {

namespace simd = nibble::precision::simd;
namespace optim = nibble::optim;
namespace cpu = nibble::core::cpu;
namespace formats = nibble::precision::formats;

constexpr int kN = 4096;
constexpr int kCalls = 64;

struct Contender {
  std::string name;  // "build" or the Highway target's name
  int64_t target;    // forced Highway target; 0: none (the build's own path)
  std::function<void()> call;
  double best = 1e30;
};

struct Kernel {
  std::string name;
  std::vector<Contender> contenders;
};

double seconds_of(const Contender& c) {
  simd::force_target(c.target);
  c.call();  // untimed: the first dispatch after a change of target re-reads the CPU's features (cpuid, slow in a VM)
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kCalls; ++i) c.call();
  const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  simd::force_target(0);
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  const auto [rounds, all] = nibble::bench::parse_target_rounds(argc, argv, 21);
  const std::vector<int64_t> targets = nibble::bench::bench_targets(all);

  // Inputs: optimizer-state-like values (normal, divided by their absmax), every code byte.
  std::mt19937 gen(1);
  std::normal_distribution<float> normal;
  std::vector<float> x(kN), out(kN);
  std::vector<uint8_t> codes(kN), code_out(kN);
  std::vector<uint16_t> bf16(kN);
  float absmax = 0;
  for (float& v : x) absmax = std::max(absmax, std::fabs(v = normal(gen)));
  for (uint8_t& c : codes) c = static_cast<uint8_t>(gen());
  std::vector<uint8_t> e4m3_codes(kN);  // finite E4M3 codes (a state never holds NaN)
  for (uint8_t& c : e4m3_codes) c = static_cast<uint8_t>(gen() % 0x7F | (gen() & 0x80));
  const uint32_t* words = optim::dynamic_map_buckets::words(true);
  const float* map_values = optim::dynamic_map(true).value;

  auto tables_of = [](const nibble::precision::Format& f, int count) {
    std::vector<float> v(static_cast<size_t>(count));
    for (int c = 0; c < count; ++c) v[static_cast<size_t>(c)] = nibble::precision::decode_scalar(static_cast<uint32_t>(c), f);
    cpu::CodeTables t;
    t.fill(v.data(), count);
    return t;
  };
  const cpu::CodeTables fp8 = tables_of(formats::kE4M3, 256), fp4 = tables_of(formats::kE2M1, 16);
  std::vector<float> pow2_folds(kN / 16), e4m3_folds(kN / 16);
  for (size_t g = 0; g < pow2_folds.size(); ++g) {
    pow2_folds[g] = std::ldexp(1.0f, static_cast<int>(gen() % 21) - 10);
    e4m3_folds[g] = nibble::precision::decode_scalar(1 + gen() % 126, formats::kE4M3);
  }
  const cpu::DecodeRun fp8_plain{&fp8, false, codes.data(), kN, nullptr};
  const cpu::DecodeRun fp8_folded{&fp8, false, codes.data(), kN, pow2_folds.data()};
  const cpu::DecodeRun fp4_folded{&fp4, true, codes.data(), kN, e4m3_folds.data()};

  // name, the build's path (null: the same as the Highway dispatch), the Highway lanes.
  struct Spec {
    const char* name;
    std::function<void()> build, hwy;
  };
  const Spec specs[] = {
      {"int8 encode", [&] { optim::dynamic_map_encode_span(x.data(), kN, absmax, true, code_out.data()); },
       [&] { optim::dynamic_map_encode_hwy(x.data(), kN, absmax, words, code_out.data()); }},
      {"int8 decode", [&] { optim::dynamic_map_decode_span(codes.data(), kN, absmax, true, out.data()); },
       [&] { optim::dynamic_map_decode_hwy(codes.data(), kN, absmax, map_values, out.data()); }},
      {"e4m3 decode", nullptr, [&] { optim::decode_e4m3_hwy(e4m3_codes.data(), kN, out.data()); }},
      {"gemm fp8->bf16", [&] { cpu::decode_bf16(fp8_plain, bf16.data()); },
       [&] { cpu::decode_bf16_hwy(fp8_plain, bf16.data()); }},
      {"gemm fp8->bf16 folded", [&] { cpu::decode_bf16(fp8_folded, bf16.data()); },
       [&] { cpu::decode_bf16_hwy(fp8_folded, bf16.data()); }},
      {"gemm fp4->bf16 folded", [&] { cpu::decode_bf16(fp4_folded, bf16.data()); },
       [&] { cpu::decode_bf16_hwy(fp4_folded, bf16.data()); }},
  };
  std::vector<Kernel> kernels;
  for (const Spec& s : specs) {
    Kernel k{s.name, {}};
    if (s.build) k.contenders.push_back({"build", 0, s.build});
    for (const int64_t t : targets) k.contenders.push_back({std::string("hwy/") + simd::target_name(t), t, s.hwy});
    kernels.push_back(std::move(k));
  }

  for (auto& k : kernels)
    for (auto& c : k.contenders) seconds_of(c);  // warm-up: tables, caches
  for (int r = 0; r < rounds; ++r)
    for (auto& k : kernels)
      for (auto& c : k.contenders) c.best = std::min(c.best, seconds_of(c));

  std::printf("best of %d interleaved rounds, %d elements x %d calls; build path = this build's own (AVX-512 "
              "lanes where kept)\n", rounds, kN, kCalls);
  const std::string avx3 = std::string("hwy/") + simd::target_name(targets.front());
  for (const auto& k : kernels) {
    // The AVX-512 reference: the build's lanes (an AVX-512 build on an AVX-512 CPU) or Highway's best target.
    double best512 = 1e30;
    for (const auto& c : k.contenders)
      if (c.target == 0 || c.name == avx3) best512 = std::min(best512, c.best);
    std::printf("%s\n", k.name.c_str());
    for (const auto& c : k.contenders) {
      const double rate = static_cast<double>(kN) * kCalls / c.best / 1e9;
      std::printf("  %-12s %7.2f G elements/s  %5.2fx vs AVX-512\n", c.name.c_str(), rate, best512 / c.best);
    }
  }
  return 0;
}
