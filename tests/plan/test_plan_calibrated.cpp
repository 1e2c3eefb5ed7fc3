// plan/: a calibrated CPU machine (plan/calibrate.py's description): cores shared by more ranks than there are,
// the format slot each recipe's GEMMs take on a CPU, and `nibble-plan predict` for one given layout.
#include <gtest/gtest.h>

#include <string>

#include "plan/cluster.h"
#include "plan/predict.h"
#include "plan/recipe_costs.h"
#include "plan/train_config_reader.h"
#include "precision/error.h"

namespace nibble::plan {
namespace {

// The shape of what plan/calibrate.py writes; the rates are round numbers, only their relations are tested.
std::string cpu_cluster(double cores) {
  return "name = \"cpu\"\ngpus_per_node = 4\ncores_per_node = " + std::to_string(cores) +
         "\ncuda_sm = 0\n[dense_tflops]\nbf16 = 0.05\nfp8 = 0.06\nmxfp8 = 0.06\nnvfp4 = 0.04\nmxfp4 = 0.05\n"
         "[memory]\ncapacity_gb = 4.0\nbandwidth_gbps = 20.0\n[intra_node]\nbandwidth_gbps = 5.0\nlatency_us = 10.0\n"
         "[inter_node]\nbandwidth_gbps = 5.0\nlatency_us = 10.0\n";
}

PlanInput small_model(const std::string& recipe) {
  PlanInput in = nibble_defaults();
  in.model.layers = 4, in.model.hidden = 256, in.model.heads = 4, in.model.kv_heads = 4, in.model.ffn = 688;
  in.model.vocab = 256, in.model.seq_len = 128;
  in.training.global_batch = 8, in.training.micro_batch = 4, in.training.recipe = recipe;
  return in;
}

StepTime predict(const ClusterSpec& c, const PlanInput& in, int tp, int cp, int dp, int pp) {
  return predict_step(in.model, in.training, layout_of(in.training, parallel::MeshShape{tp, cp, dp, pp}), c,
                      default_efficiency(c));
}

TEST(PlanCalibrated, RanksBeyondTheCoresShareThem) {
  const ClusterSpec c = parse_cluster(cpu_cluster(2.0), "cpu.toml");
  EXPECT_DOUBLE_EQ(c.cores_per_node, 2.0);
  EXPECT_DOUBLE_EQ(c.rank_share(1), 1.0);
  EXPECT_DOUBLE_EQ(c.rank_share(2), 1.0);
  EXPECT_DOUBLE_EQ(c.rank_share(4), 0.5);
  const ClusterSpec gpu = load_cluster("h100");
  EXPECT_EQ(gpu.cores_per_node, 0.0);
  EXPECT_DOUBLE_EQ(gpu.rank_share(1024), 1.0);  // GPUs own their device
  EXPECT_THROW(parse_cluster(cpu_cluster(-1.0), "cpu.toml"), InvalidArgument);
}

TEST(PlanCalibrated, CpuRecipesTakeTheirFormatSlotWithQuantizationInside) {
  const RecipeCosts nvfp4 = recipe_costs("nvfp4", 0);
  EXPECT_EQ(nvfp4.fprop, GemmFormat::kNVFP4);
  EXPECT_TRUE(nvfp4.quantize_in_gemm_rate);
  EXPECT_EQ(recipe_costs("mxfp8", 0).fprop, GemmFormat::kMXFP8);
  EXPECT_EQ(recipe_costs("fp8_current", 0).fprop, GemmFormat::kFP8);
  EXPECT_EQ(recipe_costs("bf16", 0).fprop, GemmFormat::kBF16);
  EXPECT_FALSE(recipe_costs("nvfp4", 100).quantize_in_gemm_rate);  // a GPU's passes stay memory traffic
  // The nvfp4 slot (0.04 TFLOPS) is slower than bf16's (0.05) here, so its GEMM time is longer.
  const ClusterSpec c = parse_cluster(cpu_cluster(2.0), "cpu.toml");
  EXPECT_GT(predict(c, small_model("nvfp4"), 1, 1, 1, 1).gemm, predict(c, small_model("bf16"), 1, 1, 1, 1).gemm);
}

TEST(PlanCalibrated, OneCoreRunsEveryRanksWorkInTurn) {
  const PlanInput in = small_model("bf16");
  const ClusterSpec one = parse_cluster(cpu_cluster(1.0), "cpu.toml");
  const ClusterSpec two = parse_cluster(cpu_cluster(2.0), "cpu.toml");
  // dp = 2 splits the batch: on two cores each rank does half the work at once; on one core in turn.
  const StepTime single = predict(one, in, 1, 1, 1, 1);
  const StepTime dp_one = predict(one, in, 1, 1, 2, 1);
  const StepTime dp_two = predict(two, in, 1, 1, 2, 1);
  EXPECT_GT(dp_one.shared_cores, 0.0);
  EXPECT_EQ(dp_two.shared_cores, 0.0);
  EXPECT_LT(dp_two.total, 0.75 * single.total);
  EXPECT_GE(dp_one.total, single.total - single.optimizer);
  // pp = 2 on one core: the idle stage's core works for the other, so no bubble beyond the total work.
  const StepTime pp_one = predict(one, in, 1, 1, 1, 2);
  const StepTime pp_two = predict(two, in, 1, 1, 1, 2);
  EXPECT_GT(pp_two.bubble, 0.0);
  EXPECT_GT(pp_one.total, pp_two.total);
}

TEST(PlanCalibrated, MeasuredAttentionAndElementwiseRatesReplaceTheGemmRateAndBandwidth) {
  const ClusterSpec plain = parse_cluster(cpu_cluster(2.0), "cpu.toml");
  EXPECT_EQ(plain.attention_tflops, 0.0);
  EXPECT_EQ(plain.elementwise_gbps[0], 0.0);
  const ClusterSpec c =
      parse_cluster(cpu_cluster(2.0) + "[cpu]\nattention_tflops = 0.025\nelementwise_gbps = 5.0\n", "cpu.toml");
  EXPECT_DOUBLE_EQ(c.attention_tflops, 0.025);
  for (double gbps : c.elementwise_gbps) EXPECT_DOUBLE_EQ(gbps, 5.0);  // one number: every slot
  EXPECT_THROW(parse_cluster(cpu_cluster(2.0) + "[cpu]\nattention_tflops = -1.0\n", "cpu.toml"), InvalidArgument);
  EXPECT_THROW(parse_cluster("cpu = 3\n" + cpu_cluster(2.0), "cpu.toml"), InvalidArgument);
  EXPECT_EQ(load_cluster("h100").attention_tflops, 0.0);  // spec sheets: the BF16 GEMM rate, as before

  const PlanInput in = small_model("bf16");  // 4 layers, micro-batch 4 of 8: 2 micro-batches, one rank
  const StepTime with = predict(c, in, 1, 1, 1, 1), without = predict(plain, in, 1, 1, 1, 1);
  // By hand: per layer and micro-batch, a flash core forward of half 4 b s^2 h FLOPs and a backward 2.5x that.
  const double core = 4.0 * 4 * 128 * 128 * 256;
  EXPECT_NEAR(with.attention, 2 * 4 * 1.75 * core / 0.025e12, 1e-9);
  EXPECT_NEAR(without.attention, 2 * 4 * 1.75 * core / 0.05e12, 1e-9);
  // The layer's element-wise term: 2 + 4 passes over its saved activations (plan/activations.cpp, bf16, tp = 1:
  // b s h x (2 x 4 + 3 x 2 outside; Q K V + the core's output 4 x 4, out-proj input 2, gate and up 2 f/h x 4,
  // down input f/h x 2)), now at 5 GB/s instead of the memory bandwidth's 20; nothing else moves.
  const double f_h = 688.0 / 256.0;
  const double saved = 4.0 * 128 * 256 * (2 * 4 + 3 * 2 + 4 * 4 + 2 + 2 * f_h * 4 + f_h * 2);
  EXPECT_NEAR(with.memory_bound - without.memory_bound, 2 * 4 * 6 * saved * (1 / 5e9 - 1 / 20e9), 1e-9);
  EXPECT_DOUBLE_EQ(with.gemm, without.gemm);
  EXPECT_DOUBLE_EQ(with.optimizer, without.optimizer);

  // Per slot: nvfp4's rate (its COAT compression measured in it) over the same bf16 count of bytes.
  const ClusterSpec slots = parse_cluster(
      cpu_cluster(2.0) + "[cpu]\nattention_tflops = 0.025\n[cpu.elementwise_gbps]\nbf16 = 5.0\nnvfp4 = 2.0\n", "cpu.toml");
  EXPECT_DOUBLE_EQ(slots.elementwise_gbps[static_cast<size_t>(GemmFormat::kNVFP4)], 2.0);
  EXPECT_DOUBLE_EQ(slots.elementwise_gbps[static_cast<size_t>(GemmFormat::kMXFP8)], 5.0);  // missing: bf16's
  EXPECT_THROW(parse_cluster(cpu_cluster(2.0) + "[cpu.elementwise_gbps]\nnvfp4 = 2.0\n", "cpu.toml"), InvalidArgument);
  PlanInput fp4 = small_model("nvfp4");
  fp4.training.bf16_first = fp4.training.bf16_last = 0;  // every layer in nvfp4
  // The same bf16 count at 2 GB/s instead of c's 5 GB/s in every slot: nothing else moves.
  EXPECT_NEAR(predict(slots, fp4, 1, 1, 1, 1).memory_bound - predict(c, fp4, 1, 1, 1, 1).memory_bound,
              2 * 4 * 6 * saved * (1 / 2e9 - 1 / 5e9), 1e-9);
}

TEST(PlanCalibrated, MeasuredLayerRemainderIsChargedPerTokenPerLayerOverTp) {
  const ClusterSpec plain = parse_cluster(cpu_cluster(2.0), "cpu.toml");
  for (double ns : plain.layer_remainder_ns_per_token) EXPECT_EQ(ns, 0.0);  // absent: nothing charged
  const ClusterSpec c = parse_cluster(
      cpu_cluster(2.0) + "[cpu.layer_remainder_ns_per_token]\nbf16 = 1000.0\nnvfp4 = 3000.0\n", "cpu.toml");
  EXPECT_DOUBLE_EQ(c.layer_remainder_ns_per_token[static_cast<size_t>(GemmFormat::kNVFP4)], 3000.0);
  EXPECT_DOUBLE_EQ(c.layer_remainder_ns_per_token[static_cast<size_t>(GemmFormat::kFP8)], 1000.0);  // bf16's
  const ClusterSpec zero = parse_cluster(cpu_cluster(2.0) + "[cpu]\nlayer_remainder_ns_per_token = 0\n", "cpu.toml");
  EXPECT_EQ(zero.layer_remainder_ns_per_token[0], 0.0);  // a machine whose step the model already covers
  EXPECT_THROW(parse_cluster(cpu_cluster(2.0) + "[cpu]\nlayer_remainder_ns_per_token = -5.0\n", "cpu.toml"),
               InvalidArgument);

  // By hand, one rank: 4 layers x 2 micro-batches x 512 tokens x 1000 ns; nothing else moves.
  const PlanInput in = small_model("bf16");
  const StepTime with = predict(c, in, 1, 1, 1, 1), without = predict(plain, in, 1, 1, 1, 1);
  EXPECT_NEAR(with.layer_remainder, 4 * 2 * 512 * 1000e-9, 1e-12);
  EXPECT_NEAR(with.total - without.total, with.layer_remainder, 1e-12);
  EXPECT_DOUBLE_EQ(with.gemm, without.gemm);
  EXPECT_EQ(without.layer_remainder, 0.0);
  // tp = 2 splits a layer's tokens' work over the two ranks (two ranks on two cores: no sharing).
  EXPECT_NEAR(predict(c, in, 2, 1, 1, 1).layer_remainder, with.layer_remainder / 2, 1e-12);
  // nvfp4 layers take the nvfp4 slot's figure; the default recipe keeps its first and last layers in bf16.
  PlanInput fp4 = small_model("nvfp4");
  fp4.training.bf16_first = fp4.training.bf16_last = 0;
  EXPECT_NEAR(predict(c, fp4, 1, 1, 1, 1).layer_remainder, 3 * with.layer_remainder, 1e-12);
}

TEST(PlanCalibrated, ReduceRateIsOptionalAndPositive) {
  EXPECT_EQ(parse_cluster(cpu_cluster(2.0), "cpu.toml").intra_node.reduce_gbps, 0.0);  // absent: free
  std::string text = cpu_cluster(2.0);
  const std::string intra = "[intra_node]\nbandwidth_gbps = 5.0\n";
  text.replace(text.find(intra), intra.size(), intra + "reduce_gbps = 2.5\n");
  const ClusterSpec c = parse_cluster(text, "cpu.toml");
  EXPECT_DOUBLE_EQ(c.intra_node.reduce_gbps, 2.5);
  EXPECT_EQ(c.inter_node.reduce_gbps, 0.0);
  // tp = 2's all-reduces now sum in software: the step grows, by the tp term only.
  const PlanInput in = small_model("bf16");
  const ClusterSpec plain = parse_cluster(cpu_cluster(2.0), "cpu.toml");
  EXPECT_GT(predict(c, in, 2, 1, 1, 1).tp_comm, predict(plain, in, 2, 1, 1, 1).tp_comm);
  EXPECT_DOUBLE_EQ(predict(c, in, 2, 1, 1, 1).gemm, predict(plain, in, 2, 1, 1, 1).gemm);
  text.replace(text.find("reduce_gbps = 2.5"), 17, "reduce_gbps = 0.0");
  EXPECT_THROW(parse_cluster(text, "cpu.toml"), InvalidArgument);
}

TEST(PlanCalibrated, PredictChecksTheLayoutAndWritesJson) {
  const ClusterSpec c = parse_cluster(cpu_cluster(2.0), "cpu.toml");
  const PlanInput in = small_model("bf16");
  EXPECT_THROW(predict(c, in, 3, 1, 1, 1), Error);  // 3 does not divide 4 heads
  const Layout l = layout_of(in.training, parallel::MeshShape{2, 1, 2, 1});
  const StepTime t = predict_step(in.model, in.training, l, c, default_efficiency(c));
  const std::string json = prediction_json(in.model, in.training, l, c, t);
  EXPECT_NE(json.find("\"tp\": 2, \"cp\": 1, \"dp\": 2, \"pp\": 1"), std::string::npos) << json;
  const size_t at = json.find("\"ms_per_step\": ");
  ASSERT_NE(at, std::string::npos) << json;
  EXPECT_NEAR(std::stod(json.substr(at + 15)), 1e3 * t.total, 1e-4 * 1e3 * t.total) << json;
  EXPECT_NE(json.find("\"rank_share\": 0.5"), std::string::npos) << json;
}

}  // namespace
}  // namespace nibble::plan
