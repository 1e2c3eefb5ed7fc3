// plan/: FLOP counts against Narayanan et al.'s Eq. 3, activation memory against Korthikanti et al.'s
// formulas, memory categories against hand-computed cases, cluster parsing, collective costs.
#include <gtest/gtest.h>

#include "plan/activations.h"
#include "plan/cluster.h"
#include "plan/collectives.h"
#include "plan/flops.h"
#include "plan/memory_model.h"
#include "plan/published_runs.h"
#include "plan/recipe_costs.h"
#include "plan/step_time.h"
#include "plan/train_config_reader.h"
#include "precision/error.h"

namespace nibble::plan {
namespace {

Layout layout(int tp, int cp, int dp, int pp, int64_t mb, bool sp, Recompute rc) {
  return Layout{parallel::MeshShape{tp, cp, dp, pp}, mb, sp, rc};
}

TEST(PlanFlops, GenericCountEqualsNarayananEq3ForMegatronGpt) {
  // GPT-3 175B: the per-layer count (QKV, out, 2 MLP matrices, attention core, logits) is Eq. 3's 72 form.
  const ModelSpec m = megatron_gpt(96, 12288, 96);
  EXPECT_NEAR(model_flops_per_step(m, 1536) / narayanan_flops(m, 1536, false), 1.0, 1e-12);
  // With full recomputation one more forward of the layers (not of the logits): 96 (1 + s/6h) + 6 V/(lh) x 2sh...
  const double s = 2048, h = 12288, l = 96, V = 51200, B = 1536;
  const double by_hand = 96 * B * s * l * h * h * (1 + s / (6 * h) + V / (16 * l * h));
  EXPECT_DOUBLE_EQ(narayanan_flops(m, 1536, true), by_hand);
  const LayerForwardFlops f = layer_forward_flops(m, B);
  const double extra_forward = l * (f.linear + f.attention_core);
  EXPECT_NEAR((model_flops_per_step(m, 1536) + extra_forward) / by_hand, 1.0, 1e-12);
}

TEST(PlanFlops, LayerParametersOfSwiGluWithGqa) {
  ModelSpec m;
  m.layers = 1, m.hidden = 4096, m.heads = 32, m.kv_heads = 8, m.ffn = 14336, m.vocab = 128256, m.seq_len = 8192;
  // Llama-3-8B's layer: q 4096x4096, k and v 4096x1024 each, o 4096x4096, gate/up/down 3 x 4096x14336.
  EXPECT_EQ(m.layer_params(), 4096LL * 4096 * 2 + 2LL * 4096 * 1024 + 3LL * 4096 * 14336);
}

TEST(PlanActivations, KorthikantiFormulasForMegatronGpt) {
  const ModelSpec m = megatron_gpt(1, 6144, 64);
  const RecipeCosts bf16 = recipe_costs("bf16", 80);
  const double s = 2048, b = 1, h = 6144, a = 64;
  // No parallelism: 34 sbh + 5 a s^2 b.
  EXPECT_DOUBLE_EQ(saved_activation_bytes(m, bf16, layout(1, 1, 1, 1, 1, false, Recompute::kNone)),
                   34 * s * b * h + 5 * a * s * s * b);
  // Tensor parallel t = 8: sbh (10 + 24/t + 5as/(ht)).
  EXPECT_DOUBLE_EQ(saved_activation_bytes(m, bf16, layout(8, 1, 1, 1, 1, false, Recompute::kNone)),
                   s * b * h * (10 + 24.0 / 8 + 5 * a * s / (h * 8)));
  // + sequence parallel: everything / t; + selective: the 5as^2b term dropped.
  EXPECT_DOUBLE_EQ(saved_activation_bytes(m, bf16, layout(8, 1, 1, 1, 1, true, Recompute::kNone)),
                   s * b * h / 8 * (34 + 5 * a * s / h));
  EXPECT_DOUBLE_EQ(saved_activation_bytes(m, bf16, layout(8, 1, 1, 1, 1, true, Recompute::kSelective)),
                   34 * s * b * h / 8);
  // Full recomputation: the layer input, 2sbh (/t under sequence parallelism).
  EXPECT_DOUBLE_EQ(saved_activation_bytes(m, bf16, layout(8, 1, 1, 1, 1, false, Recompute::kFull)), 2 * s * b * h);
  EXPECT_DOUBLE_EQ(saved_activation_bytes(m, bf16, layout(8, 1, 1, 1, 1, true, Recompute::kFull)), 2 * s * b * h / 8);
}

TEST(PlanActivations, QuantizedRecipesSaveLess) {
  ModelSpec m = nibble_defaults().model;
  m.hidden = 1024, m.heads = 8, m.layers = 4, m.seq_len = 1024, m.vocab = 32000;
  const Layout l = layout(1, 1, 1, 1, 4, false, Recompute::kNone);
  const double bf16 = saved_activation_bytes(m, recipe_costs("bf16", 100), l);
  const double fp8 = saved_activation_bytes(m, recipe_costs("fp8_current", 100), l);
  const double nvfp4 = saved_activation_bytes(m, recipe_costs("nvfp4", 100), l);
  EXPECT_LT(fp8, bf16);
  EXPECT_LT(nvfp4, fp8);
  // The bf16 Llama layer by hand, per token and hidden element: nibble's hidden states are FP32, its Linears keep
  // BF16 inputs. Norm inputs 2x4 and the QKV, gate and up inputs 3x2 (replicated); Q, K, V 3x4 and the fused
  // kernel's FP32 output 4 (the out-proj keeps its own BF16 copy, 2); SwiGLU inputs 2 x (ffn/h) x 4, down input
  // (ffn/h) x 2.
  const double fh = static_cast<double>(m.ffn_hidden()) / m.hidden;
  EXPECT_DOUBLE_EQ(bf16, 4.0 * 1024 * 1024 * (8 + 6 + 12 + 4 + 2 + 8 * fh + 2 * fh));
  EXPECT_DOUBLE_EQ(layer_activations(m, recipe_costs("bf16", 100), l).attention_core, 4.0 * 1024 * 1024 * 16);
}

TEST(PlanRecipeCosts, PathsFollowNibblesGemmRules) {
  // A100 has no FP8 path: nibble dequantizes to BF16. H100: FP8 native, NVFP4 dequantized. B200: NVFP4 native.
  EXPECT_EQ(recipe_costs("fp8_current", 80).fprop, GemmFormat::kBF16);
  EXPECT_TRUE(recipe_costs("fp8_current", 80).dequantized);
  EXPECT_EQ(recipe_costs("fp8_current", 90).fprop, GemmFormat::kFP8);
  EXPECT_EQ(recipe_costs("nvfp4", 90).fprop, GemmFormat::kBF16);
  EXPECT_EQ(recipe_costs("nvfp4", 100).fprop, GemmFormat::kNVFP4);
  EXPECT_EQ(recipe_costs("mxfp8", 100).wgrad, GemmFormat::kMXFP8);
  // Bytes per element: E4M3 per-tensor ~1, MXFP8 1 + 1/32, NVFP4 0.5 + 1/16.
  EXPECT_NEAR(recipe_costs("fp8_current", 90).x_row, 1.0, 1e-6);
  EXPECT_NEAR(recipe_costs("mxfp8", 100).x_row, 1.0 + 1.0 / 32, 1e-9);
  EXPECT_NEAR(recipe_costs("nvfp4", 100).x_row, 0.5 + 1.0 / 16, 1e-9);
  EXPECT_THROW(recipe_costs("fp7", 90), InvalidArgument);
}

TEST(PlanMemory, HandComputedSingleGpuCase) {
  // 1 GPU, bf16, AdamW with fp32 states, no ZeRO: per parameter 4 (FP32 parameters, nibble's master weights; no
  // BF16 copy) + 4 (gradients) + 8; the norms' vectors (2h per layer + the final norm's h) are parameters too.
  PlanInput in = nibble_defaults();
  in.model.layers = 2, in.model.hidden = 256, in.model.heads = 4, in.model.vocab = 1000, in.model.seq_len = 128;
  in.training.global_batch = 8, in.training.micro_batch = 8;
  const ClusterSpec h100 = load_cluster("h100");
  const Layout l = layout(1, 1, 1, 1, 8, false, Recompute::kNone);
  const MemoryBreakdown mem = estimate_memory(in.model, in.training, l, h100);
  const double params = static_cast<double>(in.model.total_params()) + 2 * 2 * 256 + 256;
  EXPECT_DOUBLE_EQ(mem.parameters, 4 * params);
  EXPECT_DOUBLE_EQ(mem.gradients, 4 * params);
  // Two FP32 moments per element and one int64 step count per tensor (17: embedding, 2 x 7 per layer, final norm,
  // LM head).
  EXPECT_EQ(stage_tensors(in.model, l, 0).size(), 17u);
  EXPECT_DOUBLE_EQ(mem.optimizer_states, 8 * params + 8 * 17);
  EXPECT_DOUBLE_EQ(mem.weight_copies, 0);
  EXPECT_DOUBLE_EQ(mem.activations, 2 * saved_activation_bytes(in.model, recipe_costs("bf16", 90), l));
  // Logits in BF16 and the FP32 softmax; the final norm's FP32 input and the LM head's BF16 input.
  EXPECT_DOUBLE_EQ(mem.logits, 8.0 * 128 * 1000 * 6 + 8.0 * 128 * 256 * (4 + 2));
  EXPECT_TRUE(mem.fits());
}

TEST(PlanMemory, Zero1ShardsStatesOverDpTimesCp) {
  PlanInput in = nibble_defaults();
  in.model.layers = 8, in.model.hidden = 1024, in.model.heads = 8, in.model.vocab = 32000, in.model.seq_len = 1024;
  in.training.global_batch = 64;
  in.training.optimizer_state = "fp8";
  const ClusterSpec h100 = load_cluster("h100");
  const Layout l = layout(2, 2, 4, 1, 1, true, Recompute::kNone);
  const MemoryBreakdown plain = estimate_memory(in.model, in.training, l, h100);
  in.training.zero1 = true;
  const MemoryBreakdown zero = estimate_memory(in.model, in.training, l, h100);
  EXPECT_DOUBLE_EQ(zero.parameters, plain.parameters);  // nibble's ZeRO-1 shards states, not the FP32 parameters
  const double steps = 8.0 * static_cast<double>(stage_tensors(in.model, l, 0).size());  // not sharded
  EXPECT_DOUBLE_EQ((zero.optimizer_states - steps) * 8, plain.optimizer_states - steps);
  EXPECT_DOUBLE_EQ(zero.gradients, plain.gradients);
  // FP8 moments with COAT's per-128 groups (scale, expansion, centre): 1 + 12/128 bytes per element.
  EXPECT_NEAR(state_bytes_per_element("fp8"), 1.0 + 12.0 / 128, 1e-9);
  EXPECT_DOUBLE_EQ(state_bytes_per_element("fp32"), 4.0);
}

TEST(PlanMemory, OneFOneBFirstStageHoldsPMicrobatches) {
  const ModelSpec m = megatron_gpt(96, 12288, 96);
  TrainingSpec tr;
  tr.global_batch = 64;
  const Layout l = layout(8, 1, 1, 8, 1, true, Recompute::kSelective);
  EXPECT_DOUBLE_EQ(layers_in_flight(m, tr, l, 0), 8 * 12.0);  // p micro-batches x L/p layers = L
  EXPECT_DOUBLE_EQ(layers_in_flight(m, tr, l, 7), 1 * 12.0);
  tr.pp_schedule = "gpipe";
  EXPECT_DOUBLE_EQ(layers_in_flight(m, tr, l, 0), 64 * 12.0);
}

TEST(PlanCollectives, RingCostsAndLinkChoice) {
  const ClusterSpec a100 = load_cluster("a100");
  EXPECT_DOUBLE_EQ(link_for_group(a100, 1, 8).bandwidth_gbps, a100.intra_node.bandwidth_gbps);
  EXPECT_DOUBLE_EQ(link_for_group(a100, 8, 2).bandwidth_gbps, a100.inter_node.bandwidth_gbps);
  const LinkSpec link{100.0, 0.0};
  // 2(n-1)/n x bytes / bandwidth for all-reduce; half that for all-gather.
  EXPECT_DOUBLE_EQ(all_reduce_seconds(1e9, 4, link, 1.0), 2.0 * 3 / 4 * 1e9 / 100e9);
  EXPECT_DOUBLE_EQ(all_gather_seconds(1e9, 4, link, 1.0), 3.0 / 4 * 1e9 / 100e9);
  EXPECT_DOUBLE_EQ(all_reduce_seconds(1e9, 1, link, 1.0), 0.0);
  EXPECT_DOUBLE_EQ(p2p_seconds(1e6, LinkSpec{1.0, 10.0}, 0.5), 1e6 / 0.5e9 + 10e-6);
  // A CPU link that sums in software: each rank reduces (n-1)/n of the buffer at 50 GB/s, in all-reduce and
  // reduce-scatter; all-gather and send/recv move data only.
  const LinkSpec summing{100.0, 0.0, 50.0};
  EXPECT_DOUBLE_EQ(all_reduce_seconds(1e9, 4, summing, 1.0), 2.0 * 3 / 4 * 1e9 / 100e9 + 3.0 / 4 * 1e9 / 50e9);
  EXPECT_DOUBLE_EQ(reduce_scatter_seconds(1e9, 4, summing, 1.0), 3.0 / 4 * 1e9 / 100e9 + 3.0 / 4 * 1e9 / 50e9);
  EXPECT_DOUBLE_EQ(all_gather_seconds(1e9, 4, summing, 1.0), all_gather_seconds(1e9, 4, link, 1.0));
  EXPECT_DOUBLE_EQ(reduce_scatter_seconds(1e9, 1, summing, 1.0), 0.0);
}

TEST(PlanCluster, ShippedClustersParseAndRejectBadValues) {
  for (const char* name : {"a100", "h100", "h200", "b200", "gb200"}) {
    const ClusterSpec c = load_cluster(name);
    EXPECT_EQ(c.name, name);
    EXPECT_GT(c.peak_flops(GemmFormat::kBF16), 0);
  }
  EXPECT_EQ(load_cluster("a100").peak_flops(GemmFormat::kFP8), 0);
  EXPECT_EQ(load_cluster("h100").peak_flops(GemmFormat::kNVFP4), 0);
  EXPECT_GT(load_cluster("b200").peak_flops(GemmFormat::kNVFP4), load_cluster("b200").peak_flops(GemmFormat::kFP8));
  EXPECT_THROW(parse_cluster("name = \"x\"\ngpus_per_node = 0\n", "bad"), InvalidArgument);
  EXPECT_THROW(load_cluster("tpu"), InvalidArgument);
}

TEST(PlanConfig, ReadsNibbleTrainKeys) {
  const PlanInput in = read_train_config_text(
      "[model]\nvocab = 32000\nhidden = 2048\nlayers = 16\nheads = 16\nseq_len = 4096\nrecipe = \"nvfp4\"\n"
      "bf16_first = 1\n[train]\nglobal_batch = 256\nmicro_batch = 2\n[optim]\nstate = \"fp8\"\nzero = 1\n"
      "[parallel]\nsequence_parallel = true\n[data]\ntrain = \"ignored.bin\"\n",
      "test.toml");
  EXPECT_EQ(in.model.hidden, 2048);
  EXPECT_EQ(in.model.ffn_hidden(), (2048 * 8 / 3 + 31) / 32 * 32);
  EXPECT_EQ(in.training.recipe, "nvfp4");
  EXPECT_EQ(in.training.bf16_first, 1);
  EXPECT_EQ(in.training.global_batch, 256);
  EXPECT_TRUE(in.training.zero1);
  EXPECT_TRUE(in.training.sequence_parallel);
  EXPECT_THROW(read_train_config_text("[model]\nhidden = \"big\"\n", "t"), InvalidArgument);
  EXPECT_THROW(read_train_config_text("[model]\nheads = 3\nhidden = 64\n", "t"), InvalidArgument);
}

TEST(PlanStepTime, LowPrecisionIsFasterWhereTheGpuHasThePath) {
  PlanInput in = nibble_defaults();
  in.model.layers = 32, in.model.hidden = 4096, in.model.heads = 32, in.model.vocab = 32000, in.model.seq_len = 4096;
  in.training.global_batch = 64;
  const Layout l = layout(1, 1, 8, 1, 1, false, Recompute::kNone);
  const ClusterSpec b200 = load_cluster("b200"), h100 = load_cluster("h100");
  const auto time = [&](const std::string& recipe, const ClusterSpec& c) {
    in.training.recipe = recipe;
    return estimate_step_time(in.model, in.training, l, c).total;
  };
  EXPECT_LT(time("nvfp4", b200), time("mxfp8", b200));
  EXPECT_LT(time("mxfp8", b200), time("bf16", b200));
  EXPECT_LT(time("fp8_current", h100), time("bf16", h100));
  EXPECT_GT(time("nvfp4", h100), time("fp8_current", h100));  // Hopper dequantizes NVFP4 to BF16
}

TEST(PlanStepTime, BubbleFollowsPMinusOneOverVm) {
  const ModelSpec m = megatron_gpt(96, 12288, 96);
  TrainingSpec tr;
  tr.global_batch = 64;
  tr.overlap_dp = false;
  const ClusterSpec a100 = load_cluster("a100");
  const StepTime st = estimate_step_time(m, tr, layout(8, 1, 1, 8, 1, true, Recompute::kSelective), a100);
  // Stages differ only by the embedding and logits; the bubble is (p-1)/m of the busy time within that spread.
  const double busy = st.total - st.bubble - st.dp_comm - st.optimizer;
  EXPECT_NEAR(st.bubble / busy, 7.0 / 64, 0.02);
}

}  // namespace
}  // namespace nibble::plan
