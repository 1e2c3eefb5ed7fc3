// The pipeline bubble of each schedule, measured by the runtime (parallel/nn/pipeline_runtime.h) with stage
// compute emulated as device time, beside Megatron's formula (p-1)/(v*m) and the schedule checker's
// simulation. Run under mpirun with p ranks (p = pp):
//   mpirun -np 4 --oversubscribe build/benchmarks/bench_pipeline_bubble [--slot-ms 40] [--m 8]
// Each virtual stage is an identity whose forward sleeps slot/v and whose backward sleeps 2*slot/v (a host
// waiting on GPU kernels), so a rank's chunks add up to one stage and the measurement reflects the schedule,
// not how an oversubscribed CPU time-slices the ranks. Bubble = the busiest rank's idle over its compute
// (gather_timing, as nibble-train prints it), the median of 3 steps after a warm-up. A benchmark, not a test:
// it is a timing. benchmarks/bench_train_bubble.py measures the real trainer's.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "parallel/mesh.h"
#include "parallel/nn/pipeline_runtime.h"
#include "parallel/runtime.h"

namespace par = nibble::parallel;

namespace {

struct DeviceTime : torch::autograd::Function<DeviceTime> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, double seconds) {
    ctx->saved_data["seconds"] = seconds;
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    return x.clone();
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    std::this_thread::sleep_for(std::chrono::duration<double>(2 * ctx->saved_data["seconds"].toDouble()));
    return {grad[0], torch::Tensor()};
  }
};

}  // namespace

int main(int argc, char** argv) {
  double slot_ms = 40;
  int m_arg = 0, group = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--slot-ms" && i + 1 < argc) {
      slot_ms = std::atof(argv[++i]);
    } else if (a == "--m" && i + 1 < argc) {
      m_arg = std::atoi(argv[++i]);
    } else if (a == "--group" && i + 1 < argc) {
      group = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--slot-ms 40] [--m micro-batches (default 2p)] [--group interleaved microbatch_group]\n", argv[0]);
      return 2;
    }
  }
  torch::set_num_threads(1);
  const par::RuntimeInfo& info = par::init();
  const int p = info.world_size;
  par::Mesh mesh({.tp = 1, .cp = 1, .dp = 1, .pp = p});
  const int m = m_arg > 0 ? m_arg : 2 * p;
  const std::vector<int64_t> shape = {2, 8};
  if (info.rank == 0)
    std::printf("bench_pipeline_bubble: p=%d, m=%d, stage time %.0f ms forward + %.0f ms backward (emulated)\n", p, m,
                slot_ms, 2 * slot_ms);
  const std::pair<par::ScheduleKind, int> cases[] = {
      {par::ScheduleKind::kGPipe, 1}, {par::ScheduleKind::k1F1B, 1}, {par::ScheduleKind::kInterleaved, 2}};
  for (const auto& [kind, v] : cases) {
    const double slot = slot_ms / 1e3 / v;
    par::nn::PipelineRuntime rt(
        mesh.pp(),
        {.schedule =
             {.kind = kind, .stages = p, .microbatches = m, .virtual_chunks = v, .microbatch_group = v > 1 ? group : 0},
         .activation_shape = shape},
        [&](int chunk, int, const torch::Tensor& input) {
          const bool first = chunk == 0 && mesh.pp().rank() == 0;
          const bool last = chunk == v - 1 && mesh.pp().rank() == p - 1;
          torch::Tensor x = first ? torch::ones(shape).set_requires_grad(true) : input;
          torch::Tensor y = DeviceTime::apply(x, slot);
          return last ? y.sum() : y;
        });
    rt.step();  // warm-up
    std::vector<double> steps;
    for (int i = 0; i < 3; ++i) steps.push_back(par::nn::gather_timing(mesh.pp(), rt.step()).bubble);
    std::sort(steps.begin(), steps.end());
    const double measured = steps[1];
    const double formula = double(p - 1) / (v * m), simulated = rt.check_report().bubble_fraction;
    if (info.rank == 0)
      std::printf("%-11s v=%d: measured bubble %.3f | (p-1)/(v*m) %.3f (measured/formula %.2fx) | checker's "
                  "simulation %.3f (measured/simulated %.2fx)\n",
                  par::schedule_name(kind), v, measured, formula, measured / formula, simulated,
                  measured / simulated);
  }
  return 0;
}
