#pragma once
// Which device nibble-train trains on: `[train] device = "auto" | "cuda" | "cpu"`, resolved on every rank
// before MPI starts, so a setting that cannot be honoured is one clear message per rank and exit code 2.
//
// The trainer's CUDA path (parameters, activations and optimizer states on the GPU, the CUDA quantizers and
// cuBLASLt GEMMs behind the Linear, NCCL groups) is not built yet: kTrainerCudaPath says so, "auto" then trains
// on the CPU and says why, and "cuda" fails naming what is missing.
#include <string>

#include "core/gemm_path.h"
#include "core/recipe.h"

namespace nibble::launch {

inline constexpr bool kTrainerCudaPath = false;

struct DeviceChoice {
  bool cuda = false;
  std::string why;  // shown at start-up: "cpu (train.device = \"auto\": no CUDA GPU is visible)"
};

// `setting` is train.device, already checked by validate() (auto | cuda | cpu); `visible_gpus` the CUDA devices
// this rank sees; `cuda_path` whether the trainer can run on them. Throws InvalidArgument naming train.device
// when "cuda" cannot be honoured.
DeviceChoice choose_train_device(const std::string& setting, int visible_gpus, bool cuda_path = kTrainerCudaPath);

// CUDA devices this process sees (torch's count: 0 without a GPU, a driver or a CUDA build of torch).
int visible_cuda_devices();

// One line per GEMM of a Linear under `recipe` on `device`: which kernel runs fprop, dgrad and wgrad
// (core/gemm_path.h), e.g. "fprop nvfp4 x nvfp4_2d: CPU emulation (exact BF16 decode, FP32 sums)".
std::string describe_gemm_paths(const core::Recipe& recipe, core::GemmDevice device);

}  // namespace nibble::launch
