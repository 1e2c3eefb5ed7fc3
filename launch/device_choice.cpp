#include "launch/device_choice.h"

#include <torch/cuda.h>

#include <cstdlib>

#include "precision/error.h"

namespace nibble::launch {
namespace {

std::string visible_env() {
  const char* v = std::getenv("CUDA_VISIBLE_DEVICES");
  return v ? std::string("CUDA_VISIBLE_DEVICES=\"") + v + "\"" : std::string("CUDA_VISIBLE_DEVICES unset");
}

std::string operand(const core::OperandSpec& s) {
  return s.quantized ? precision::scheme_name(s.options.scheme) : std::string("bf16");
}

std::string gemm_line(const char* gemm, const core::OperandSpec& a, const core::OperandSpec& b, core::GemmPath path) {
  return std::string(gemm) + " " + operand(a) + " x " + operand(b) + ": " + core::gemm_path_name(path);
}

}  // namespace

std::string cuda_training_gap(const TrainConfig& c) {
#if !NIBBLE_WITH_CUDA
  (void)c;
  return "this build of nibble has no CUDA kernels (configure with NIBBLE_CUDA=ON)";
#else
  // Every layout's collectives take CUDA tensors (NCCL where each member has a GPU of its own, else staged through
  // host memory: launch/device_mesh.h), and ZeRO-1 keeps its shard and states in host memory (ZeRO-Offload's
  // arrangement: parallel/nn/zero_optimizer.h). Nothing is left uncovered.
  (void)c;
  return "";
#endif
}

DeviceChoice choose_train_device(const std::string& setting, int visible_gpus, const std::string& cuda_gap) {
  // (validate() has refused any setting but auto | cuda | cpu, naming the key.)
  if (setting == "cpu") return {false, "cpu (train.device = \"cpu\")"};
  if (setting == "cuda") {
    if (visible_gpus == 0)
      throw InvalidArgument("train.device = \"cuda\" but this rank sees no CUDA GPU (" + visible_env() +
                            ", torch's device count 0); valid here: \"cpu\" or \"auto\"");
    if (!cuda_gap.empty())
      throw InvalidArgument("train.device = \"cuda\": " + std::to_string(visible_gpus) + " GPU(s) visible, but " +
                            cuda_gap + "; valid for this config: \"cpu\", or \"auto\", which trains on the CPU");
    return {true, "cuda (train.device = \"cuda\", " + std::to_string(visible_gpus) + " visible)"};
  }
  if (visible_gpus > 0 && cuda_gap.empty()) return {true, "cuda (train.device = \"auto\": a GPU is visible)"};
  if (visible_gpus > 0)
    return {false, "cpu (train.device = \"auto\": " + std::to_string(visible_gpus) + " GPU(s) visible, but " +
                       cuda_gap + ")"};
  return {false, "cpu (train.device = \"auto\": no CUDA GPU is visible)"};
}

int visible_cuda_devices() {
  return static_cast<int>(torch::cuda::device_count());
}

std::string describe_gemm_paths(const core::Recipe& r, core::GemmDevice device) {
  const core::LinearGemmPaths p = core::linear_gemm_paths(r, device);
  return gemm_line("fprop", r.x_row, r.w_row, p.fprop) + "; " + gemm_line("dgrad", r.dy_row, r.w_col, p.dgrad) +
         "; " + gemm_line("wgrad", r.dy_col, r.x_col, p.wgrad);
}

}  // namespace nibble::launch
