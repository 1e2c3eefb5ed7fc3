#pragma once
// The pipeline-parallel runtime: runs one pipeline rank's action list (parallel/pipeline_schedule.h) for a
// training step over the pp group's Communicator, generic over the model: the caller gives one function,
// forward(chunk, micro-batch, input) -> output, and the runtime does the rest -- receives and sends
// activations and gradients, runs backward through torch autograd from the saved output with the received
// gradient, frees what is no longer needed, and measures the time spent waiting (the bubble).
//
// Contract (docs/PARALLEL.md, "Pipeline runtime"):
//  - Construction is collective over the pp group: every rank must ask for the same schedule and the same
//    activation shape/dtype (checked by an all_gather before anything else; a mismatch is InvalidArgument on
//    every rank naming both sides). The schedule is generated and proven deadlock-free by check_schedule here,
//    before the first step.
//  - p2p messages are fixed [micro_batch, seq, hidden] tensors of one dtype on one device (activations and their
//    gradients alike), agreed up front; a stage returning anything else is an InvalidArgument naming the stage.
//  - forward(c, m, input): `input` is undefined on virtual stage 0 (the stage reads its own micro-batch) and
//    otherwise the received activation, a leaf that requires grad. The last virtual stage returns the loss
//    of micro-batch m (one element); every other stage returns the activation for the next stage. Parameter
//    gradients accumulate in .grad as in plain autograd (zero them between steps yourself).
//  - The loss is seeded with loss_scale (default 1/m), so the gradients are those of the mean over micro-
//    batches -- the same as one backward of mean(losses) on a single rank.
//  - Each run of consecutive send/recv actions is one paired operation: all of it is posted, then its receives
//    are waited for; sends complete in the background (their buffers kept until they do, all waited for at
//    the end of the step), the semantics check_schedule proves deadlock-freedom under.
//    Messages are tagged by kind (activation/gradient) so they match in issue order per (peer, kind), the
//    order check_schedule assumes.
//  - Memory: after a forward the rank holds (input, output) of that (micro-batch, chunk) until its backward;
//    once the output has been sent its storage is released (Megatron's deallocate_output_tensor: backward
//    only needs the output's autograd node, not its values), and after backward both are dropped. The peak
//    number held is reported (it equals the checker's in_flight for this rank).
//  - after_last_backward runs right after this rank's last backward of the step (before the final gradient
//    send): where the trainer starts the data-parallel gradient reduction.
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/pipeline_schedule.h"

namespace nibble::parallel::nn {

using StageForward = std::function<torch::Tensor(int chunk, int microbatch, const torch::Tensor& input)>;

struct PipelineRuntimeOptions {
  ScheduleOptions schedule;               // stages must equal the pp group's size
  std::vector<int64_t> activation_shape;  // [micro_batch, seq, hidden], every entry >= 1
  torch::ScalarType activation_dtype = torch::kFloat32;
  // Where the stages' activations and gradients live. Messages always travel through host memory: a GPU's are
  // copied to the host before a send and back after a receive, because the runtime's sends complete in the
  // background while the rank computes, which NCCL's point-to-point (a send occupies its stream until the peer
  // receives; no tags) does not give -- on a Mesh NCCL group the host messages go over its MPI group. (The
  // GPU branch is compiled only until a GPU run proves it.)
  torch::Device activation_device = torch::kCPU;
  double loss_scale = 0;  // gradient seeded into each loss; 0 = 1/microbatches
  std::function<void()> after_last_backward = {};
  bool free_sent_outputs = true;  // release an output's storage once it was sent
};

struct PipelineStepStats {
  std::vector<double> losses;  // the rank holding the last stage (pp rank p-1): loss of micro-batch i; else empty
  int peak_held = 0;           // most (micro-batch, chunk) activations held at once on this rank
  double step_seconds = 0;     // wall time of step() after its starting barrier
  double compute_seconds = 0;  // inside forward/backward
  double wait_seconds = 0;     // inside paired p2p operations (posting + waiting): idle
  double bubble_fraction = 0;  // wait_seconds / step_seconds
};

// The step's PipelineTiming over all pp ranks (collective over `pp`: every rank gets the same numbers).
PipelineTiming gather_timing(Communicator& pp, const PipelineStepStats& stats);

class PipelineRuntime {
 public:
  // Collective over `pp` (see above). `pp` must outlive the runtime.
  PipelineRuntime(Communicator& pp, PipelineRuntimeOptions options, StageForward forward);

  // Runs this rank's action list once: one training step's forwards and backwards of all micro-batches.
  // Starts with a barrier over the pp group, so the ranks' step_seconds share one origin (gather_timing) and
  // no rank's first wait includes another's work from before the step (its optimizer update, say).
  PipelineStepStats step();

  const PipelineSchedule& schedule() const { return schedule_; }
  const ScheduleReport& check_report() const { return report_; }  // the checker's verdict (simulated bubble)
  const std::vector<Action>& actions() const { return schedule_.ranks[static_cast<size_t>(pp_.rank())]; }

 private:
  Communicator& pp_;
  PipelineRuntimeOptions options_;
  StageForward forward_;
  PipelineSchedule schedule_;
  ScheduleReport report_;
};

}  // namespace nibble::parallel::nn
