#pragma once
// Which device nibble-train trains on: `[train] device = "auto" | "cuda" | "cpu"`, resolved on every rank
// before MPI starts, so a setting that cannot be honoured is one clear message per rank and exit code 2.
//
// The trainer's CUDA path: parameters, gradients, optimizer states and batches on this rank's GPU (local rank ->
// device, parallel::device_for_local_rank), the CUDA quantizers and cuBLASLt GEMMs behind every Linear
// (core/cuda_dispatch.h), torch's SDPA for attention, the fused CUDA optimizer step; every group's collectives
// over NCCL where its members each have a GPU, else staged through host memory over MPI (launch/device_mesh.h);
// pipeline messages always through host memory; ZeRO-1's shard and states in host memory. cuda_training_gap says
// what a config would need beyond what the build covers ("auto" then trains on the CPU and says why, "cuda" fails
// naming it): today only a build without CUDA.
#include <string>

#include "core/gemm_path.h"
#include "core/recipe.h"
#include "launch/train_config.h"

namespace nibble::launch {

struct DeviceChoice {
  bool cuda = false;
  std::string why;  // shown at start-up: "cpu (train.device = \"auto\": no CUDA GPU is visible)"
};

// Why the CUDA trainer cannot run `config` ("" when it can): the parallel layouts it does not cover yet.
std::string cuda_training_gap(const TrainConfig& config);

// `setting` is train.device, already checked by validate() (auto | cuda | cpu); `visible_gpus` the CUDA devices
// this rank sees; `cuda_gap` cuda_training_gap's answer for the config. Throws InvalidArgument naming
// train.device when "cuda" cannot be honoured.
DeviceChoice choose_train_device(const std::string& setting, int visible_gpus, const std::string& cuda_gap);

int visible_cuda_devices();

// One line per GEMM of a Linear under `recipe` on `device`: which kernel runs fprop, dgrad and wgrad
// (core/gemm_path.h), e.g. "fprop nvfp4 x nvfp4_2d: CPU emulation (exact BF16 decode, FP32 sums)".
std::string describe_gemm_paths(const core::Recipe& recipe, core::GemmDevice device);

}  // namespace nibble::launch
