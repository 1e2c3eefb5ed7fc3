// model.recompute (core/model/recompute.h): the GPT's loss and every parameter's gradient with the attention core
// or whole layers recomputed in backward equal, bit for bit, those of the same model keeping its activations --
// in recipes whose backward draws stochastic-rounding bits (nvfp4: SR gradients and RHT; mxfp4_quartet: rotations
// drawn per backward) and with delayed scaling, over two micro-batches whose backwards run after both forwards
// (as a pipeline schedule interleaves them). And the recomputation really happens: full recompute keeps less.
// The same holds with the attention core in BF16 (model.attention_precision), whose saved inputs are what the
// selective recomputation runs again on; and BF16 attention stays within BF16's error of the FP32 core.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/model/gpt.h"
#include "core/model/single_rank_tensor_parallel.h"
#include "core/saved_for_backward_meter.h"
#include "precision/error.h"

namespace nibble::core::model {
namespace {

struct StepResult {
  std::vector<double> losses;
  std::map<std::string, torch::Tensor> grads;
  int64_t saved_bytes = 0;  // nibble's own saved-for-backward bytes while both forwards are live
};

StepResult train_step(const std::string& recipe, const std::string& recompute,
                      const std::string& attention_precision = "fp32") {
  GptConfig cfg;
  cfg.vocab = 256, cfg.hidden = 64, cfg.layers = 2, cfg.heads = 4, cfg.seq_len = 32, cfg.seed = 3;
  cfg.recipe = recipe;
  cfg.recompute = recompute;
  cfg.attention_precision = attention_precision;
  Gpt model(cfg, std::make_shared<SingleRankTensorParallel>());
  torch::manual_seed(11);
  const auto tokens = torch::randint(0, 256, {2, 2, 33}, torch::kInt64);
  StepResult run;
  std::vector<torch::Tensor> losses;
  const int64_t before = saved_bytes();
  for (int64_t m = 0; m < 2; ++m) {  // both forwards first, then both backwards, in reverse (1F1B's drain)
    model.set_rounding_stream(static_cast<uint64_t>(m + 1));
    const auto t = tokens[m];
    losses.push_back(model.loss(t.narrow(1, 0, 32), t.narrow(1, 1, 32)));
  }
  run.saved_bytes = saved_bytes() - before;
  for (int64_t m = 1; m >= 0; --m) {
    model.set_rounding_stream(static_cast<uint64_t>(100 + m));  // what runs in between moves the counters
    (losses[static_cast<size_t>(m)] / 2.0).backward();
    run.losses.push_back(losses[static_cast<size_t>(m)].item<double>());
  }
  for (const auto& [name, p] : model.named_parameters()) run.grads[name] = p.grad().clone();
  return run;
}

class Recompute : public ::testing::TestWithParam<std::string> {};

TEST_P(Recompute, SameLossAndGradientsBitForBit) {
  const StepResult plain = train_step(GetParam(), "none");
  for (const std::string mode : {"selective", "full"}) {
    const StepResult again = train_step(GetParam(), mode);
    EXPECT_EQ(again.losses, plain.losses) << mode;
    ASSERT_EQ(again.grads.size(), plain.grads.size());
    for (const auto& [name, g] : plain.grads) {
      ASSERT_TRUE(again.grads.at(name).defined()) << mode << " " << name;
      EXPECT_TRUE(torch::equal(again.grads.at(name), g)) << mode << " " << name;
    }
    if (mode == "full" && GetParam() != "bf16") {
      EXPECT_LT(again.saved_bytes, plain.saved_bytes / 4) << "full recompute still keeps the layers' operands";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Recipes, Recompute, ::testing::Values("bf16", "nvfp4", "mxfp4_quartet", "fp8_delayed"));

TEST(RecomputeBf16Attention, SameLossAndGradientsBitForBit) {
  for (const std::string recipe : {"bf16", "nvfp4"}) {
    const StepResult plain = train_step(recipe, "none", "bf16");
    for (const std::string mode : {"selective", "full"}) {
      const StepResult again = train_step(recipe, mode, "bf16");
      EXPECT_EQ(again.losses, plain.losses) << recipe << " " << mode;
      for (const auto& [name, g] : plain.grads)
        EXPECT_TRUE(torch::equal(again.grads.at(name), g)) << recipe << " " << mode << " " << name;
    }
  }
}

TEST(RecomputeBf16Attention, WithinBf16ErrorOfTheFp32Core) {
  const StepResult fp32 = train_step("bf16", "none", "fp32");
  const StepResult bf16 = train_step("bf16", "none", "bf16");
  ASSERT_EQ(bf16.losses.size(), fp32.losses.size());
  for (size_t i = 0; i < fp32.losses.size(); ++i) {
    EXPECT_NE(bf16.losses[i], fp32.losses[i]) << "the core did not run in BF16";
    EXPECT_NEAR(bf16.losses[i], fp32.losses[i], 1e-2 * std::abs(fp32.losses[i]));
  }
  for (const auto& [name, g] : fp32.grads) {
    // Each gradient points the same way: BF16's 8 bits of mantissa in q, k, v and the core's outputs.
    const torch::Tensor a = g.flatten().to(torch::kFloat64), b = bf16.grads.at(name).flatten().to(torch::kFloat64);
    const double cosine = (a.dot(b) / (a.norm() * b.norm())).item<double>();
    EXPECT_GT(cosine, 0.999) << name;
  }
}

TEST(RecomputeConfig, UnknownModeIsRefusedNamingTheKey) {
  GptConfig cfg;
  cfg.recompute = "attention";
  try {
    cfg.validate();
    FAIL() << "accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("model.recompute = \"attention\" is invalid"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace nibble::core::model
