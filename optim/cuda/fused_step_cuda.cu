// The multi-tensor CUDA optimizer step. Block b handles tile b of the concatenated tensors (256 elements:
// one int8 block, two fp8 groups); a binary search over the tile table finds its tensor. Every per-element
// rule is the HOST_DEVICE function the CPU step calls; only the group reductions (max, min nonzero) are
// arranged differently, and those are exact. Built with --fmad=false, like the CPU side's
// -ffp-contract=off, so the two compute the same bits (tests/optim/test_optim_cuda_vs_cpu.cpp).
#include <cfloat>
#include <string>

#include "optim/clip.h"
#include "optim/cuda/fused_step_cuda.h"
#include "optim/dre.h"
#include "optim/dynamic_map.h"
#include "optim/state_codec.h"
#include "precision/error.h"
#include "precision/stochastic.h"

namespace nibble::optim::cuda {
namespace {

constexpr int kTile = 256;
constexpr int kSrBits = 16;

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw Error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(err));
}

__device__ __forceinline__ float bf16_to_float(uint16_t b) {
  return __uint_as_float(static_cast<uint32_t>(b) << 16);
}

__device__ __forceinline__ float load_element(const void* data, ElementType type, int64_t i) {
  return type == ElementType::kFloat32 ? static_cast<const float*>(data)[i]
                                       : bf16_to_float(static_cast<const uint16_t*>(data)[i]);
}

// The slot holding tile `tile`: the last s with tile_starts[s] <= tile.
__device__ int find_slot(const int64_t* tile_starts, int count, int64_t tile) {
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (tile_starts[mid] <= tile)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

// Reductions over groups of `width` consecutive threads (128 or 256) through shared memory.
__device__ float group_max(float x, float* scratch, int width) {
  const int t = threadIdx.x;
  scratch[t] = x;
  __syncthreads();
  const int base = t - t % width;
  for (int stride = width / 2; stride > 0; stride /= 2) {
    if (t - base < stride) scratch[t] = fmaxf(scratch[t], scratch[t + stride]);
    __syncthreads();
  }
  const float r = scratch[base];
  __syncthreads();
  return r;
}

__device__ float group_min(float x, float* scratch, int width) {
  const int t = threadIdx.x;
  scratch[t] = x;
  __syncthreads();
  const int base = t - t % width;
  for (int stride = width / 2; stride > 0; stride /= 2) {
    if (t - base < stride) scratch[t] = fminf(scratch[t], scratch[t + stride]);
    __syncthreads();
  }
  const float r = scratch[base];
  __syncthreads();
  return r;
}

__device__ float decode_moment(StateCodec codec, const MomentView& mv, const float* map_values, int64_t i) {
  switch (codec) {
    case StateCodec::kFP32:
      return static_cast<const float*>(mv.values)[i];
    case StateCodec::kBF16:
      return bf16_to_float(static_cast<const uint16_t*>(mv.values)[i]);
    case StateCodec::kFP8: {
      const int64_t g = i / kDreGroupSize;
      const DreGroup grp{mv.scale[g], mv.expansion[g], mv.centre[g]};
      return dre_decode(precision::decode_scalar(static_cast<const uint8_t*>(mv.values)[i], precision::formats::kE4M3),
                        grp);
    }
    case StateCodec::kFP8Plain:
      return plain_fp8_decode(
          precision::decode_scalar(static_cast<const uint8_t*>(mv.values)[i], precision::formats::kE4M3),
          mv.scale[i / kDreGroupSize]);
    case StateCodec::kInt8:
      return map_values[static_cast<const uint8_t*>(mv.values)[i]] * mv.scale[i / kInt8BlockSize];
  }
  return 0.0f;
}

// Requantizes element i (thread value x; `active` false past the tensor's end) of one moment. Every thread
// of the block calls it (it synchronises).
__device__ void encode_moment(StateCodec codec, const MomentView& mv, const float* thresholds, int64_t i, bool active,
                              float x, uint64_t seed, uint64_t offset, uint64_t index_base, bool clamp_k,
                              float* scratch) {
  switch (codec) {
    case StateCodec::kFP32:
      if (active) static_cast<float*>(mv.values)[i] = x;
      return;
    case StateCodec::kBF16:
      if (active) {
        const uint32_t bits = precision::stochastic_bits(seed, offset, index_base + i, kSrBits);
        static_cast<uint16_t*>(mv.values)[i] = static_cast<uint16_t>(precision::encode_scalar(
            x, precision::formats::kBF16, precision::Rounding::kStochastic, precision::RandomBits{bits, kSrBits}));
      }
      return;
    case StateCodec::kFP8: {
      const float a = active ? fabsf(x) : 0.0f;
      const float max_abs = group_max(a, scratch, kDreGroupSize);
      const float min_nonzero = group_min(a == 0.0f ? FLT_MAX : a, scratch, kDreGroupSize);
      const DreGroup grp = dre_group(max_abs, min_nonzero, clamp_k);
      if (active) {
        static_cast<uint8_t*>(mv.values)[i] = static_cast<uint8_t>(dre_encode(x, grp));
        if (i % kDreGroupSize == 0) {
          const int64_t g = i / kDreGroupSize;
          mv.scale[g] = grp.scale;
          mv.expansion[g] = grp.expansion;
          mv.centre[g] = grp.centre;
        }
      }
      return;
    }
    case StateCodec::kFP8Plain: {
      const float max_abs = group_max(active ? fabsf(x) : 0.0f, scratch, kDreGroupSize);
      const float scale = plain_fp8_scale(max_abs);
      if (active) {
        static_cast<uint8_t*>(mv.values)[i] = static_cast<uint8_t>(plain_fp8_encode(x, scale));
        if (i % kDreGroupSize == 0) mv.scale[i / kDreGroupSize] = scale;
      }
      return;
    }
    case StateCodec::kInt8: {
      const float max_abs = group_max(active ? fabsf(x) : 0.0f, scratch, kInt8BlockSize);
      const float norm = max_abs > 0.0f ? max_abs : 1.0f;
      if (active) {
        static_cast<uint8_t*>(mv.values)[i] = static_cast<uint8_t>(dynamic_map_encode(x / norm, thresholds));
        if (i % kInt8BlockSize == 0) mv.scale[i / kInt8BlockSize] = max_abs;
      }
      return;
    }
  }
}

__global__ void __launch_bounds__(kTile) check_kernel(const TensorSlot* slots, const int64_t* tile_starts, int count,
                                                      double* partials, DeviceStepState* state) {
  __shared__ double sums[kTile];
  const int64_t tile = blockIdx.x;
  const int s = find_slot(tile_starts, count, tile);
  const TensorSlot& slot = slots[s];
  const int64_t i = (tile - tile_starts[s]) * kTile + threadIdx.x;
  double sq = 0.0;
  if (i < slot.numel) {
    const float g = load_element(slot.grad, slot.grad_type, i);
    if (!isfinite(g)) {
      atomicOr(&state->nonfinite, 1u);
      atomicMin(&state->first_bad_slot, static_cast<uint32_t>(s));
    } else {
      sq = static_cast<double>(g) * static_cast<double>(g);
    }
  }
  sums[threadIdx.x] = sq;
  __syncthreads();
  for (int stride = kTile / 2; stride > 0; stride /= 2) {
    if (static_cast<int>(threadIdx.x) < stride) sums[threadIdx.x] += sums[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) partials[tile] = sums[0];
}

// One block: the norm (partials added in a fixed order), the skip decision, the clip coefficient, the LR
// factor, and the step counters.
__global__ void __launch_bounds__(kTile) decide_kernel(const TensorSlot* slots, int count, const double* partials,
                                                       int64_t tiles, StepConfig config, DeviceStepState* state) {
  __shared__ double sums[kTile];
  double acc = 0.0;
  for (int64_t t = threadIdx.x; t < tiles; t += kTile) acc += partials[t];
  sums[threadIdx.x] = acc;
  __syncthreads();
  for (int stride = kTile / 2; stride > 0; stride /= 2) {
    if (static_cast<int>(threadIdx.x) < stride) sums[threadIdx.x] += sums[threadIdx.x + stride];
    __syncthreads();
  }
  const bool skip = state->nonfinite != 0;
  if (!skip)
    for (int s = threadIdx.x; s < count; s += kTile) *slots[s].step += 1;
  if (threadIdx.x == 0) {
    state->sum_squares = sums[0];
    if (skip) {
      state->skipped_steps += 1;
    } else {
      state->clip = clip_coefficient(sqrt(sums[0]), config.max_grad_norm);
      state->lr_factor = lr_factor(config.schedule, state->step);
      state->step += 1;
    }
  }
}

__global__ void __launch_bounds__(kTile)
    update_kernel(const TensorSlot* slots, const int64_t* tile_starts, int count, const float* maps, StepConfig config,
                  const DeviceStepState* state) {
  if (state->nonfinite != 0) return;  // the step is skipped: nothing moves
  __shared__ float scratch[kTile];
  __shared__ float map_values[2][256];
  __shared__ float map_thresholds[2][256];
  const int64_t tile = blockIdx.x;
  const int s = find_slot(tile_starts, count, tile);
  const TensorSlot& slot = slots[s];
  const StateCodec codec = effective_codec(slot.codec, slot.numel);
  if (codec == StateCodec::kInt8) {
    for (int k = threadIdx.x; k < 256; k += kTile) {
      map_values[0][k] = maps[k];
      map_thresholds[0][k] = maps[256 + k];
      map_values[1][k] = maps[512 + k];
      map_thresholds[1][k] = maps[768 + k];
    }
    __syncthreads();
  }
  const int64_t i = (tile - tile_starts[s]) * kTile + threadIdx.x;
  const bool active = i < slot.numel;
  const int64_t t = *slot.step;  // already advanced by decide_kernel
  const float clip = state->clip;
  const double factor = state->lr_factor;

  float p = 0.0f, m = 0.0f, v = 0.0f;
  const bool adamw = config.algorithm == Algorithm::kAdamW;
  const bool has_m = adamw || config.sgd.momentum != 0.0;
  if (active) {
    const float g = load_element(slot.grad, slot.grad_type, i) * clip;
    p = slot.master ? slot.master[i] : load_element(slot.param, slot.param_type, i);
    if (has_m) m = decode_moment(codec, slot.m, map_values[0], i);
    if (adamw) {
      v = decode_moment(codec, slot.v, map_values[1], i);
      adamw_element(p, m, v, g, adamw_scalars(config.adamw, t, factor));
    } else {
      sgd_element(p, m, g, sgd_scalars(config.sgd, t, factor));
    }
    if (slot.master) slot.master[i] = p;
    if (slot.param_type == ElementType::kFloat32) {
      static_cast<float*>(slot.param)[i] = p;
    } else {
      const bool sr = !slot.master && config.stochastic_rounding;
      const uint32_t bits =
          sr ? precision::stochastic_bits(config.seed, philox_offset(t, kStreamParam), slot.index_base + i, kSrBits)
             : 0u;
      static_cast<uint16_t*>(slot.param)[i] = static_cast<uint16_t>(precision::encode_scalar(
          p, precision::formats::kBF16, sr ? precision::Rounding::kStochastic : precision::Rounding::kNearestEven,
          precision::RandomBits{bits, kSrBits}));
    }
  }
  // Every thread reaches the reductions (inactive ones contribute zeros), after all decodes above have read
  // the old side data of this tile's groups.
  __syncthreads();
  if (has_m)
    encode_moment(codec, slot.m, map_thresholds[0], i, active, m, config.seed, philox_offset(t, kStreamM),
                  slot.index_base, config.dre_clamp_k, scratch);
  if (adamw)
    encode_moment(codec, slot.v, map_thresholds[1], i, active, v, config.seed, philox_offset(t, kStreamV),
                  slot.index_base, config.dre_clamp_k, scratch);
}

// One block: the host's scalars into the state the update kernel reads, and every slot's step counter advanced.
__global__ void __launch_bounds__(kTile) set_scalars_kernel(const TensorSlot* slots, int count, float clip,
                                                            double factor, DeviceStepState* state) {
  for (int s = threadIdx.x; s < count; s += kTile) *slots[s].step += 1;
  if (threadIdx.x == 0) {
    state->nonfinite = 0;
    state->clip = clip;
    state->lr_factor = factor;
  }
}

}  // namespace

MultiTensorPlan::MultiTensorPlan(const TensorSlot* slots, size_t count, cudaStream_t stream) : count_(count) {
  if (count == 0) throw InvalidArgument("CUDA optimizer plan: no tensors");
  if (count > 0x7FFFFFFFu)
    throw InvalidArgument("CUDA optimizer plan: too many tensors (" + std::to_string(count) + ")");
  int64_t* starts = new int64_t[count + 1];
  starts[0] = 0;
  for (size_t s = 0; s < count; ++s) {
    if (slots[s].numel <= 0)
      throw InvalidArgument("CUDA optimizer plan: tensor " + std::to_string(s) + " has numel " +
                            std::to_string(slots[s].numel) + "; leave empty tensors out");
    starts[s + 1] = starts[s] + (slots[s].numel + kTile - 1) / kTile;
  }
  tiles_ = starts[count];
  float host_maps[1024];
  for (int sign = 0; sign < 2; ++sign) {
    const DynamicMap& map = dynamic_map(sign == 0);
    for (int k = 0; k < 256; ++k) {
      host_maps[512 * sign + k] = map.value[k];
      host_maps[512 * sign + 256 + k] = map.threshold[k];
    }
  }
  check(cudaMalloc(&slots_, count * sizeof(TensorSlot)), "cudaMalloc slots");
  check(cudaMalloc(&tile_starts_, (count + 1) * sizeof(int64_t)), "cudaMalloc tiles");
  check(cudaMalloc(&partials_, static_cast<size_t>(tiles_) * sizeof(double)), "cudaMalloc partials");
  check(cudaMalloc(&maps_, sizeof host_maps), "cudaMalloc maps");
  check(cudaMemcpyAsync(slots_, slots, count * sizeof(TensorSlot), cudaMemcpyHostToDevice, stream), "copy slots");
  check(cudaMemcpyAsync(tile_starts_, starts, (count + 1) * sizeof(int64_t), cudaMemcpyHostToDevice, stream),
        "copy tiles");
  check(cudaMemcpyAsync(maps_, host_maps, sizeof host_maps, cudaMemcpyHostToDevice, stream), "copy maps");
  // The host arrays must outlive the asynchronous copies.
  check(cudaStreamSynchronize(stream), "plan upload");
  delete[] starts;
}

MultiTensorPlan::~MultiTensorPlan() {
  cudaFree(slots_);
  cudaFree(tile_starts_);
  cudaFree(partials_);
  cudaFree(maps_);
}

void init_step_state(DeviceStepState* state, cudaStream_t stream) {
  const DeviceStepState fresh{};
  check(cudaMemcpyAsync(state, &fresh, sizeof fresh, cudaMemcpyHostToDevice, stream), "init step state");
  check(cudaStreamSynchronize(stream), "init step state");
}

void step(const MultiTensorPlan& plan, const StepConfig& config, DeviceStepState* state, cudaStream_t stream) {
  const int count = static_cast<int>(plan.count_);
  const unsigned tiles = static_cast<unsigned>(plan.tiles_);
  check(cudaMemsetAsync(&state->nonfinite, 0, sizeof(uint32_t), stream), "reset nonfinite");
  check(cudaMemsetAsync(&state->first_bad_slot, 0xFF, sizeof(uint32_t), stream), "reset first_bad_slot");
  check_kernel<<<tiles, kTile, 0, stream>>>(plan.slots_, plan.tile_starts_, count, plan.partials_, state);
  check(cudaGetLastError(), "optimizer check kernel");
  decide_kernel<<<1, kTile, 0, stream>>>(plan.slots_, count, plan.partials_, plan.tiles_, config, state);
  check(cudaGetLastError(), "optimizer decide kernel");
  update_kernel<<<tiles, kTile, 0, stream>>>(plan.slots_, plan.tile_starts_, count, plan.maps_, config, state);
  check(cudaGetLastError(), "optimizer update kernel");
}

void update(const MultiTensorPlan& plan, const StepConfig& config, float grad_scale, double lr_factor,
            DeviceStepState* state, cudaStream_t stream) {
  const int count = static_cast<int>(plan.count_);
  set_scalars_kernel<<<1, kTile, 0, stream>>>(plan.slots_, count, grad_scale, lr_factor, state);
  check(cudaGetLastError(), "optimizer scalars kernel");
  update_kernel<<<static_cast<unsigned>(plan.tiles_), kTile, 0, stream>>>(plan.slots_, plan.tile_starts_, count,
                                                                          plan.maps_, config, state);
  check(cudaGetLastError(), "optimizer update kernel");
}

}  // namespace nibble::optim::cuda
