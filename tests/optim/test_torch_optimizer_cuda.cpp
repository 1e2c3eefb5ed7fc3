// nibble::optim::Optimizer on CUDA parameters against the same optimizer on CPU copies of them: every state codec,
// float32 and bfloat16 parameters (with and without an FP32 master), AdamW and SGD with momentum, a grad_scale
// from the caller (the trainer's global clip) -- parameters and every state field bit for bit after each step
// (optim/cuda's kernel runs optim/'s scalar rules; tests/optim/test_optim_cuda_vs_cpu.cpp checks the kernels
// themselves). With max_grad_norm set, the gradient norm is summed in another order on the device, so that case
// is checked to the last bits of the coefficient only (documented in optim/torch/grad_norm.cpp).
// Exits 77 (a CTest skip, never a pass) without a GPU; NIBBLE_REQUIRE_GPU=1 makes that a failure.
#include <gtest/gtest.h>

#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "optim/torch/optimizer.h"
#include "tests/common/gpu_test_main.h"

namespace nibble::optim {
namespace {

struct Case {
  std::string kind, state, master;
  torch::ScalarType dtype;
};

void expect_same_state(const Optimizer& cpu, const Optimizer& gpu, const std::string& what) {
  const auto a = cpu.state_dict(), b = gpu.state_dict();
  ASSERT_EQ(a.size(), b.size()) << what;
  for (const auto& [key, t] : a) EXPECT_TRUE(torch::equal(t, b.at(key).cpu())) << what << ": " << key;
}

TEST(TorchOptimizerCuda, EqualsCpuBitForBit) {
  std::vector<Case> cases;
  for (const char* state : {"fp32", "bf16", "fp8", "fp8_plain", "int8"}) {
    cases.push_back({"adamw", state, "fp32", torch::kFloat32});
    cases.push_back({"adamw", state, "fp32", torch::kBFloat16});
    cases.push_back({"adamw", state, "none", torch::kBFloat16});
    cases.push_back({"sgd", state, "fp32", torch::kFloat32});
  }
  for (const Case& c : cases) {
    const std::string what = c.kind + "/" + c.state + "/" + c.master + "/" + c10::toString(c.dtype);
    torch::manual_seed(4);
    // 1000 elements: several fp8 (128) and int8 (256) groups and a partial one; 300: one more tensor in the plan.
    const torch::Tensor w = torch::randn({40, 25}).to(c.dtype), b = torch::randn({300}).to(c.dtype);
    OptimizerConfig config;
    config.kind = c.kind;
    config.state = c.state;
    config.master = c.master;
    config.lr = 1e-2;
    config.weight_decay = 0.1;
    config.momentum = c.kind == "sgd" ? 0.9 : 0.0;
    config.seed = 17;
    const torch::Tensor wc = w.clone(), bc = b.clone(), wg = w.cuda(), bg = b.cuda();
    Optimizer cpu({{"w", wc}, {"b", bc}}, config), gpu({{"w", wg}, {"b", bg}}, config);
    for (int step = 0; step < 3; ++step) {
      const torch::Tensor gw = torch::randn({40, 25}).to(c.dtype), gb = torch::randn({300}).to(c.dtype);
      const float scale = step == 1 ? 0.5f : 1.0f;
      const double lr_factor = 1.0 - 0.1 * step;
      const StepResult rc = cpu.step_with_grads({gw, gb}, lr_factor, scale);
      const StepResult rg = gpu.step_with_grads({gw.cuda(), gb.cuda()}, lr_factor, scale);
      EXPECT_TRUE(rc.applied && rg.applied) << what;
      EXPECT_TRUE(torch::equal(wc, wg.cpu())) << what << " step " << step << ": w";
      EXPECT_TRUE(torch::equal(bc, bg.cpu())) << what << " step " << step << ": b";
      expect_same_state(cpu, gpu, what + " step " + std::to_string(step));
    }
  }
}

TEST(TorchOptimizerCuda, NonFiniteGradientSkipsAndNamesIt) {
  const torch::Tensor w = torch::zeros({64}, torch::TensorOptions().device(torch::kCUDA));
  Optimizer opt({{"w", w}}, OptimizerConfig{});
  torch::Tensor g = torch::ones({64});
  g[9] = std::numeric_limits<float>::infinity();
  const StepResult r = opt.step_with_grads({g.cuda()}, 1.0, 1.0f);
  EXPECT_FALSE(r.applied);
  EXPECT_EQ(r.nonfinite_param, "w");
  EXPECT_EQ(r.nonfinite_element, 9);
  EXPECT_TRUE(torch::equal(w.cpu(), torch::zeros({64})));
}

TEST(TorchOptimizerCuda, ClippedStepCloseToCpu) {
  torch::manual_seed(8);
  const torch::Tensor w = torch::randn({1000});
  OptimizerConfig config;
  config.max_grad_norm = 0.5;
  const torch::Tensor wc = w.clone(), wg = w.cuda();
  Optimizer cpu({{"w", wc}}, config), gpu({{"w", wg}}, config);
  const torch::Tensor g = torch::randn({1000});
  const StepResult rc = cpu.step_with_grads({g}, 1.0, 1.0f), rg = gpu.step_with_grads({g.cuda()}, 1.0, 1.0f);
  EXPECT_NEAR(rc.grad_norm, rg.grad_norm, 1e-12 * rc.grad_norm);
  EXPECT_TRUE(torch::allclose(wc, wg.cpu(), 1e-6, 1e-7));
}

}  // namespace
}  // namespace nibble::optim

int main(int argc, char** argv) {
  return nibble::testing::gpu_test_main(argc, argv, "the optimizer's CUDA path");
}
