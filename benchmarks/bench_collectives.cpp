// Collective bandwidth through nibble's Communicator against the same raw MPI calls, measured in the same run.
//
//   mpirun -np 4 --oversubscribe build/benchmarks/bench_collectives [--sizes 4K,64K,1M,16M] [--reps 11]
//
// For all-reduce, reduce-scatter and all-gather of float32 at several message sizes it times, interleaved in
// every repetition: the blocking MPI call (MPI_Allreduce, MPI_Reduce_scatter_block, MPI_Allgather), the
// nonblocking MPI call the Communicator issues (MPI_Iallreduce... + MPI_Wait), and the Communicator (which polls
// MPI_Test against its deadline). A repetition's time is the slowest rank's; the table shows the median and
// the best repetition (the best is the cost without the noise of other processes on a shared machine).
// Bus bandwidth follows nccl-tests: bytes / time x 2(n-1)/n for all-reduce, x (n-1)/n for the other two, where
// bytes is the full buffer (the all-reduce message, the reduce-scatter input, the all-gather output).
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "parallel/mpi_communicator.h"
#include "parallel/runtime.h"

namespace {

namespace par = nibble::parallel;

size_t parse_size(const std::string& s) {
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  const std::string unit = end;
  const double k = unit == "K" || unit == "KiB"   ? 1024.0
                   : unit == "M" || unit == "MiB" ? 1048576.0
                   : unit == "G" || unit == "GiB" ? 1073741824.0
                                                  : 1.0;
  return static_cast<size_t>(v * k);
}

std::string human(size_t bytes) {
  char b[32];
  if (bytes >= 1048576)
    std::snprintf(b, sizeof b, "%zu MiB", bytes / 1048576);
  else if (bytes >= 1024)
    std::snprintf(b, sizeof b, "%zu KiB", bytes / 1024);
  else
    std::snprintf(b, sizeof b, "%zu B", bytes);
  return b;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
double best(const std::vector<double>& v) {
  return *std::min_element(v.begin(), v.end());
}

// Seconds per call of `f` over `iters` calls, the slowest rank's.
double time_calls(const std::function<void()>& f, int iters) {
  MPI_Barrier(MPI_COMM_WORLD);
  const double t0 = MPI_Wtime();
  for (int i = 0; i < iters; ++i) f();
  double t = (MPI_Wtime() - t0) / iters;
  MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return t;
}

void check(int rc) {
  if (rc != MPI_SUCCESS) MPI_Abort(MPI_COMM_WORLD, 2);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<size_t> sizes = {4096, 65536, 1 << 20, 16 << 20};
  int reps = 11;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--sizes" && i + 1 < argc) {
      sizes.clear();
      std::string list = argv[++i];
      size_t pos = 0;
      while (pos <= list.size()) {
        const size_t comma = std::min(list.find(',', pos), list.size());
        sizes.push_back(parse_size(list.substr(pos, comma - pos)));
        pos = comma + 1;
      }
    } else if (a == "--reps" && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: %s [--sizes 4K,64K,1M,16M] [--reps 11]\n", argv[0]);
      return 2;
    }
  }

  const par::RuntimeInfo& info = par::init();
  const int n = info.world_size;
  auto nib = par::MpiCommunicator::duplicate(MPI_COMM_WORLD, "bench");
  MPI_Comm raw;
  MPI_Comm_dup(MPI_COMM_WORLD, &raw);

  if (info.rank == 0) {
    std::printf(
        "bench_collectives: %d ranks, float32, %d interleaved repetitions (time of the slowest rank), bus GB/s\n", n,
        reps);
    std::printf("%-15s %9s | %-32s | %-32s | %s\n", "", "", "median of repetitions", "best repetition",
                "nibble / raw MPI");
    std::printf("%-15s %9s | %10s %10s %10s | %10s %10s %10s | %9s %9s\n", "op", "bytes", "raw MPI", "raw nonbl",
                "nibble", "raw MPI", "raw nonbl", "nibble", "median", "best");
  }
  std::vector<double> ratios;
  const char* ops[] = {"all_reduce", "reduce_scatter", "all_gather"};
  for (const char* op : ops) {
    for (size_t bytes : sizes) {
      const size_t total = std::max<size_t>(bytes / sizeof(float) / static_cast<size_t>(n), 1) * static_cast<size_t>(n);
      const size_t part = total / static_cast<size_t>(n);
      std::vector<float> in(total, 1.0f), out(total, 0.0f);
      const int itotal = static_cast<int>(total), ipart = static_cast<int>(part);
      const std::string name = op;
      const double factor = name == "all_reduce" ? 2.0 * (n - 1) / n : static_cast<double>(n - 1) / n;
      const int iters = static_cast<int>(std::clamp<size_t>((8u << 20) / (total * sizeof(float)), 2, 500));

      std::function<void()> blocking, nonblocking, ours;
      if (name == "all_reduce") {
        blocking = [&] { check(MPI_Allreduce(in.data(), out.data(), itotal, MPI_FLOAT, MPI_SUM, raw)); };
        nonblocking = [&] {
          MPI_Request r;
          check(MPI_Iallreduce(in.data(), out.data(), itotal, MPI_FLOAT, MPI_SUM, raw, &r));
          check(MPI_Wait(&r, MPI_STATUS_IGNORE));
        };
        ours = [&] { nib->all_reduce(std::span<const float>(in), std::span<float>(out), par::ReduceOp::kSum); };
      } else if (name == "reduce_scatter") {
        blocking = [&] { check(MPI_Reduce_scatter_block(in.data(), out.data(), ipart, MPI_FLOAT, MPI_SUM, raw)); };
        nonblocking = [&] {
          MPI_Request r;
          check(MPI_Ireduce_scatter_block(in.data(), out.data(), ipart, MPI_FLOAT, MPI_SUM, raw, &r));
          check(MPI_Wait(&r, MPI_STATUS_IGNORE));
        };
        ours = [&] {
          nib->reduce_scatter(std::span<const float>(in), std::span<float>(out.data(), part), par::ReduceOp::kSum);
        };
      } else {
        blocking = [&] { check(MPI_Allgather(in.data(), ipart, MPI_FLOAT, out.data(), ipart, MPI_FLOAT, raw)); };
        nonblocking = [&] {
          MPI_Request r;
          check(MPI_Iallgather(in.data(), ipart, MPI_FLOAT, out.data(), ipart, MPI_FLOAT, raw, &r));
          check(MPI_Wait(&r, MPI_STATUS_IGNORE));
        };
        ours = [&] { nib->all_gather(std::span<const float>(in.data(), part), std::span<float>(out)); };
      }
      // Warm up every path, then interleave them (rotating the order) so drifting machine load hits all three.
      for (auto* f : {&blocking, &nonblocking, &ours}) time_calls(*f, 2);
      std::vector<double> tb, tn, to;
      for (int rep = 0; rep < reps; ++rep) {
        for (int k = 0; k < 3; ++k) {
          switch ((rep + k) % 3) {
            case 0:
              tb.push_back(time_calls(blocking, iters));
              break;
            case 1:
              tn.push_back(time_calls(nonblocking, iters));
              break;
            default:
              to.push_back(time_calls(ours, iters));
              break;
          }
        }
      }
      const double full = static_cast<double>(total * sizeof(float));
      const auto busbw = [&](double seconds) { return full / seconds / 1e9 * factor; };
      const double ratio_median = median(tb) / median(to), ratio_best = best(tb) / best(to);
      ratios.push_back(ratio_median);
      if (info.rank == 0)
        std::printf("%-15s %9s | %10.3f %10.3f %10.3f | %10.3f %10.3f %10.3f | %8.2fx %8.2fx\n", op,
                    human(total * sizeof(float)).c_str(), busbw(median(tb)), busbw(median(tn)), busbw(median(to)),
                    busbw(best(tb)), busbw(best(tn)), busbw(best(to)), ratio_median, ratio_best);
    }
  }
  if (info.rank == 0) {
    double log_sum = 0;
    for (double r : ratios) log_sum += std::log(r);
    std::printf("geometric mean of the median ratios, nibble / raw MPI: %.2fx (goal >= 0.90x)\n",
                std::exp(log_sum / static_cast<double>(ratios.size())));
  }
  MPI_Comm_free(&raw);
  nib.reset();
  par::shutdown();
  return 0;
}
