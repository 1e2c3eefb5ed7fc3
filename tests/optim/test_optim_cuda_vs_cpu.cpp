// The multi-tensor CUDA optimizer step against the CPU step, bit for bit (no clipping: the global norm is
// reduced in another order on the GPU), and the device-side NaN skip. Exits 77 (a CTest skip, never a pass)
// when there is no CUDA device.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "optim/cuda/fused_step_cuda.h"
#include "optim/fused_step.h"
#include "tests/common/gpu_test_main.h"

namespace nibble::optim {
namespace {

void ok(cudaError_t e) {
  ASSERT_EQ(e, cudaSuccess) << cudaGetErrorString(e);
}

template <class T>
T* to_device(const std::vector<T>& h) {
  void* p = nullptr;
  if (h.empty()) return nullptr;
  cudaMalloc(&p, h.size() * sizeof(T));
  cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice);
  return static_cast<T*>(p);
}

template <class T>
std::vector<T> to_host(const T* d, size_t n) {
  std::vector<T> h(n);
  if (n) cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost);
  return h;
}

// Host buffers of one tensor's state plus the matching device copies.
struct Moment {
  std::vector<uint8_t> values;
  std::vector<float> scale, expansion, centre;
  Moment(const MomentLayout& L)
      : values(L.value_bytes),
        scale(L.has_scale ? L.groups : 0),
        expansion(L.has_expansion ? L.groups : 0, 1.0f),
        centre(L.has_centre ? L.groups : 0, 1.0f) {}
  MomentView host() {
    return {values.data(), scale.empty() ? nullptr : scale.data(), expansion.empty() ? nullptr : expansion.data(),
            centre.empty() ? nullptr : centre.data()};
  }
  MomentView device() { return {to_device(values), to_device(scale), to_device(expansion), to_device(centre)}; }
};

TEST(OptimCuda, MultiTensorStepEqualsCpuBitForBit) {
  const int64_t sizes[] = {300, 5000, 70000 + 33};
  for (StateCodec codec :
       {StateCodec::kFP32, StateCodec::kBF16, StateCodec::kFP8, StateCodec::kFP8Plain, StateCodec::kInt8}) {
    for (bool bf16 : {false, true}) {
      std::vector<TensorSlot> cpu_slots, gpu_slots;
      std::vector<std::vector<uint16_t>> p16;
      std::vector<std::vector<float>> p32, grads;
      std::vector<Moment> ms, vs;
      std::vector<int64_t> steps(3, 0);
      std::mt19937 rng(1);
      std::normal_distribution<float> normal(0.0f, 1.0f);
      ms.reserve(3);
      vs.reserve(3);
      uint64_t base = 0;
      for (int k = 0; k < 3; ++k) {
        const int64_t n = sizes[k];
        p32.emplace_back(n);
        p16.emplace_back(n);
        grads.emplace_back(n);
        for (int64_t i = 0; i < n; ++i) {
          p32[k][i] = normal(rng) * 0.1f;
          p16[k][i] = static_cast<uint16_t>(precision::float_bits(p32[k][i]) >> 16);
          grads[k][i] = normal(rng);
        }
        ms.emplace_back(moment_layout(codec, n));
        vs.emplace_back(moment_layout(codec, n));
        TensorSlot s;
        s.numel = n;
        s.param_type = s.grad_type = bf16 ? ElementType::kBFloat16 : ElementType::kFloat32;
        s.codec = codec;
        s.index_base = base;
        base += static_cast<uint64_t>(n);
        gpu_slots.push_back(s);
        cpu_slots.push_back(s);
      }
      // bf16 gradients: the same values rounded down to bf16 on both sides.
      std::vector<std::vector<uint16_t>> g16(3);
      for (int k = 0; k < 3; ++k) {
        g16[k].resize(grads[k].size());
        for (size_t i = 0; i < grads[k].size(); ++i)
          g16[k][i] = static_cast<uint16_t>(precision::float_bits(grads[k][i]) >> 16);
      }
      int64_t* dsteps = to_device(steps);
      for (int k = 0; k < 3; ++k) {
        TensorSlot& c = cpu_slots[k];
        TensorSlot& g = gpu_slots[k];
        c.param = bf16 ? static_cast<void*>(p16[k].data()) : static_cast<void*>(p32[k].data());
        c.grad = bf16 ? static_cast<const void*>(g16[k].data()) : static_cast<const void*>(grads[k].data());
        g.param = bf16 ? static_cast<void*>(to_device(p16[k])) : static_cast<void*>(to_device(p32[k]));
        g.grad = bf16 ? static_cast<const void*>(to_device(g16[k])) : static_cast<const void*>(to_device(grads[k]));
        c.m = ms[k].host();
        c.v = vs[k].host();
        g.m = ms[k].device();
        g.v = vs[k].device();
        c.step = &steps[k];
        g.step = dsteps + k;
      }
      cuda::MultiTensorPlan plan(gpu_slots.data(), gpu_slots.size(), nullptr);
      void* state_memory = nullptr;
      ok(cudaMalloc(&state_memory, sizeof(cuda::DeviceStepState)));
      auto* state = static_cast<cuda::DeviceStepState*>(state_memory);
      cuda::init_step_state(state, nullptr);
      cuda::StepConfig config;
      config.schedule = make_lr_schedule("cosine", 2, 10, 0.1);
      config.seed = 77;
      for (int step = 0; step < 4; ++step) {
        UpdateOptions o;
        o.seed = 77;
        o.lr_factor = lr_factor(config.schedule, step);
        adamw_update(cpu_slots, config.adamw, o);
        cuda::step(plan, config, state, nullptr);
      }
      ok(cudaDeviceSynchronize());
      for (int k = 0; k < 3; ++k) {
        const MomentLayout L = moment_layout(codec, sizes[k]);
        EXPECT_EQ(to_host(static_cast<uint8_t*>(gpu_slots[k].m.values), L.value_bytes), ms[k].values);
        EXPECT_EQ(to_host(static_cast<uint8_t*>(gpu_slots[k].v.values), L.value_bytes), vs[k].values);
        if (L.has_scale) {
          EXPECT_EQ(to_host(gpu_slots[k].m.scale, L.groups), ms[k].scale);
        }
        if (L.has_expansion) {
          EXPECT_EQ(to_host(gpu_slots[k].v.expansion, L.groups), vs[k].expansion);
          EXPECT_EQ(to_host(gpu_slots[k].v.centre, L.groups), vs[k].centre);
        }
        if (bf16) {
          EXPECT_EQ(to_host(static_cast<uint16_t*>(gpu_slots[k].param), sizes[k]), p16[k]);
        } else {
          EXPECT_EQ(to_host(static_cast<float*>(gpu_slots[k].param), sizes[k]), p32[k]);
        }
      }
      EXPECT_EQ(to_host(dsteps, 3), steps);
      // A NaN gradient: the step is skipped on the device, nothing moves, the tensor is named.
      const float nan = NAN;
      const std::vector<int64_t> steps_before = to_host(dsteps, 3);
      if (!bf16) {
        ok(cudaMemcpy(const_cast<void*>(gpu_slots[1].grad), &nan, 4, cudaMemcpyHostToDevice));
        const std::vector<float> before = to_host(static_cast<float*>(gpu_slots[2].param), sizes[2]);
        cuda::step(plan, config, state, nullptr);
        cuda::DeviceStepState host_state;
        ok(cudaMemcpy(&host_state, state, sizeof host_state, cudaMemcpyDeviceToHost));
        EXPECT_EQ(host_state.first_bad_slot, 1u);
        EXPECT_EQ(host_state.skipped_steps, 1);
        EXPECT_EQ(host_state.step, 4);
        EXPECT_EQ(to_host(static_cast<float*>(gpu_slots[2].param), sizes[2]), before);
        EXPECT_EQ(to_host(dsteps, 3), steps_before);
      }
      cudaFree(state);
    }
  }
}

}  // namespace
}  // namespace nibble::optim

int main(int argc, char** argv) {
  return nibble::testing::gpu_test_main(argc, argv, "the CUDA optimizer");
}
