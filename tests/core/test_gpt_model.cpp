// The GPT model against a straightforward FP64 torch reference written from the architecture's definition
// (explicit causal softmax instead of SDPA, RoPE from its angle formula), on the same BF16-rounded GEMM
// operands the bf16 recipe uses; and the tp sharding of the parameters against slices of the tp = 1 model.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <map>

#include "core/model/gpt.h"
#include "core/model/rope.h"
#include "core/model/single_rank_tensor_parallel.h"
#include "precision/error.h"

namespace nibble::core::model {
namespace {

using torch::Tensor;
const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);

Tensor bf16(const Tensor& t) {
  return t.to(torch::kBFloat16).to(torch::kFloat64);
}
// The bf16 recipe's fprop: both operands rounded to BF16, then an exact (here FP64) product.
Tensor ref_linear(const Tensor& x, const Tensor& w) {
  return torch::matmul(bf16(x), bf16(w).t());
}
Tensor ref_rms(const Tensor& x, const Tensor& w, double eps) {
  return x / torch::sqrt((x * x).mean(-1, true) + eps) * w;
}

// x [b, heads, s, d]: pairs (i, i + d/2) rotated by pos * theta^(-2i/d).
Tensor ref_rope(const Tensor& x, double theta) {
  const int64_t s = x.size(2), d = x.size(3), half = d / 2;
  Tensor out = x.clone();
  for (int64_t i = 0; i < half; ++i) {
    Tensor angle = torch::arange(s, f64) * std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(d));
    Tensor c = angle.cos().view({1, 1, s}), sn = angle.sin().view({1, 1, s});
    Tensor a = x.select(3, i), b = x.select(3, i + half);
    out.select(3, i).copy_(a * c - b * sn);
    out.select(3, i + half).copy_(b * c + a * sn);
  }
  return out;
}

Tensor ref_loss(const GptConfig& cfg, std::map<std::string, Tensor>& p, const Tensor& tokens, const Tensor& targets) {
  const int64_t b = tokens.size(0), s = tokens.size(1), nh = cfg.heads, hd = cfg.head_dim();
  Tensor h = p["embedding.weight"].index_select(0, tokens.reshape({-1}));
  Tensor mask = torch::ones({s, s}, torch::kBool).triu(1);
  for (int64_t i = 0; i < cfg.layers; ++i) {
    const std::string n = "layers." + std::to_string(i);
    Tensor x = ref_rms(h, p[n + ".attn_norm.weight"], cfg.norm_eps);
    Tensor qkv = ref_linear(x, p[n + ".qkv.weight"]).view({b, s, nh, 3, hd}).permute({3, 0, 2, 1, 4});
    Tensor q = ref_rope(qkv[0], cfg.rope_theta), k = ref_rope(qkv[1], cfg.rope_theta);
    Tensor scores = torch::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(hd));
    Tensor att = torch::softmax(scores.masked_fill(mask, -INFINITY), -1);
    Tensor a = torch::matmul(att, qkv[2]).transpose(1, 2).reshape({b * s, nh * hd});
    h = h + ref_linear(a, p[n + ".out.weight"]);
    x = ref_rms(h, p[n + ".mlp_norm.weight"], cfg.norm_eps);
    Tensor g = ref_linear(x, p[n + ".gate.weight"]), u = ref_linear(x, p[n + ".up.weight"]);
    h = h + ref_linear(g * torch::sigmoid(g) * u, p[n + ".down.weight"]);
  }
  Tensor logits = ref_linear(ref_rms(h, p["final_norm.weight"], cfg.norm_eps), p["lm_head.weight"]);
  return torch::nll_loss(torch::log_softmax(logits, -1), targets.reshape({-1}));
}

double rel_err(const Tensor& a, const Tensor& b) {
  return (a.to(torch::kFloat64) - b).norm().item<double>() / b.norm().item<double>();
}

GptConfig tiny() {
  GptConfig c;
  c.vocab = 64;
  c.hidden = 32;
  c.layers = 2;
  c.heads = 4;
  c.ffn_hidden = 64;
  c.seq_len = 16;
  c.init_std = 0.2;  // large enough that attention is far from uniform
  c.seed = 7;
  return c;
}

TEST(GptModel, LossAndGradientsMatchFp64ReferenceForBf16Recipe) {
  torch::set_num_threads(2);
  const GptConfig cfg = tiny();
  Gpt model(cfg, std::make_shared<SingleRankTensorParallel>());
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  Tensor tokens = torch::randint(cfg.vocab, {3, cfg.seq_len}, gen, torch::kInt64);
  Tensor targets = torch::randint(cfg.vocab, {3, cfg.seq_len}, gen, torch::kInt64);

  Tensor loss = model.loss(tokens, targets);
  loss.backward();

  std::map<std::string, Tensor> ref;
  for (const auto& [name, t] : model.named_parameters())
    ref[name] = t.detach().to(torch::kFloat64).set_requires_grad(true);
  Tensor ref_l = ref_loss(cfg, ref, tokens, targets);
  ref_l.backward();

  // Forward: FP32 accumulation and FP32 activations vs FP64 on the same BF16 operands.
  EXPECT_NEAR(loss.item<double>(), ref_l.item<double>(), 2e-5 * ref_l.item<double>());
  // Backward: nibble also rounds the output gradients (dgrad/wgrad operands) to BF16, which the FP64
  // reference does not: a few BF16 ulps (2^-8) of relative error per gradient.
  for (const auto& [name, t] : model.named_parameters()) {
    ASSERT_TRUE(t.grad().defined()) << name;
    EXPECT_LT(rel_err(t.grad(), ref[name].grad()), 1.5e-2) << name;
  }
}

TEST(GptModel, QuantizedRecipesRunAndStayCloseToBf16) {
  torch::set_num_threads(2);
  GptConfig cfg = tiny();
  cfg.hidden = 64;  // block-scaled formats need whole 32-element blocks along K
  cfg.heads = 2;
  Tensor tokens = torch::randint(cfg.vocab, {2, cfg.seq_len}, at::make_generator<at::CPUGeneratorImpl>(5));
  Gpt reference(cfg, std::make_shared<SingleRankTensorParallel>());
  const double ref_loss_value = reference.loss(tokens, tokens).item<double>();
  for (const char* recipe : {"fp8_current", "mxfp8", "nvfp4"}) {
    cfg.recipe = recipe;
    Gpt model(cfg, std::make_shared<SingleRankTensorParallel>());
    Tensor loss = model.loss(tokens, tokens);
    loss.backward();
    // Same initial weights: the quantized forward is a perturbation of the bf16 one (TE's sanity bound).
    EXPECT_NEAR(loss.item<double>(), ref_loss_value, 0.05 * ref_loss_value) << recipe;
    for (const auto& p : model.params()) EXPECT_TRUE(torch::isfinite(p.tensor.grad()).all().item<bool>()) << p.name;
  }
}

TEST(GptModel, LayerRecipesKeepFirstAndLastLayersInBf16) {
  GptConfig cfg = tiny();
  cfg.layers = 5;
  cfg.recipe = "nvfp4";
  cfg.bf16_first = 1;
  cfg.bf16_last = 2;
  const std::vector<std::string> expect = {"bf16", "nvfp4", "nvfp4", "bf16", "bf16"};
  for (int64_t i = 0; i < cfg.layers; ++i) EXPECT_EQ(layer_recipe_name(cfg, i), expect[static_cast<size_t>(i)]);
  Gpt model(cfg, std::make_shared<SingleRankTensorParallel>());
  EXPECT_EQ(model.linear_states()[0]->recipe.name, "bf16");      // layers.0.qkv
  EXPECT_EQ(model.linear_states()[5]->recipe.name, "nvfp4");     // layers.1.qkv
  EXPECT_EQ(model.linear_states().back()->recipe.name, "bf16");  // lm_head
}

// A TensorParallel that only reports a rank and size: enough to build the model's shards.
class ShapeOnlyTp : public TensorParallel {
 public:
  ShapeOnlyTp(int rank, int size) : rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  bool sequence_parallel() const override { return false; }
  Tensor column_linear(const Tensor&, const Tensor&, const std::optional<Tensor>&,
                       const std::shared_ptr<LinearState>&) override {
    throw Error("unused");
  }
  Tensor row_linear(const Tensor&, const Tensor&, const std::optional<Tensor>&,
                    const std::shared_ptr<LinearState>&) override {
    throw Error("unused");
  }
  Tensor embedding(const Tensor&, const Tensor&) override { throw Error("unused"); }
  Tensor cross_entropy(const Tensor&, const Tensor&, bool) override { throw Error("unused"); }
  Tensor scatter_sequence(const Tensor& x) override { return x; }
  Tensor gather_sequence(const Tensor& x) override { return x; }
  void all_reduce_replicated_grads(const std::vector<Tensor>&) override {}

 private:
  int rank_, size_;
};

TEST(GptModel, ShardsAreSlicesOfTheSingleRankModel) {
  const GptConfig cfg = tiny();
  Gpt full(cfg, std::make_shared<SingleRankTensorParallel>());
  for (int r = 0; r < 2; ++r) {
    Gpt shard(cfg, std::make_shared<ShapeOnlyTp>(r, 2));
    ASSERT_EQ(shard.params().size(), full.params().size());
    for (size_t i = 0; i < full.params().size(); ++i) {
      const ParamInfo& f = full.params()[i];
      const ParamInfo& s = shard.params()[i];
      Tensor expect = f.tensor;
      if (s.shard_dim >= 0) {
        const int64_t part = f.tensor.size(s.shard_dim) / 2;
        expect = f.tensor.narrow(s.shard_dim, r * part, part);
      }
      EXPECT_TRUE(torch::equal(s.tensor, expect)) << s.name << " rank " << r;
    }
  }
  // tp = 3 divides neither the 4 heads nor the vocabulary of 64.
  EXPECT_THROW(Gpt(cfg, std::make_shared<ShapeOnlyTp>(0, 3)), InvalidArgument);
}

// The fused CPU RoPE (core/cpu/rope_cpu.h) against the torch expression it replaces, through autograd both: the
// same values forward and backward, on the strided views the model passes (q and k are slices of the permuted
// QKV projection), at the model's tables; and against the FP64 angle formula.
TEST(GptModel, FusedRopeEqualsTheTorchExpression) {
  const int64_t b = 2, s = 40, heads = 3, d = 16;
  const auto [cos, sin] = rope_tables(s, d, 10000.0);
  torch::manual_seed(5);
  const Tensor qkv = (torch::randn({b, s, heads, 3, d}) * 3).permute({3, 0, 2, 1, 4});
  for (int64_t part = 0; part < 2; ++part) {
    const Tensor x1 = qkv[part].detach().requires_grad_(), x2 = qkv[part].detach().requires_grad_();
    ASSERT_FALSE(x1.is_contiguous());
    const Tensor y = apply_rope(x1, cos, sin), y_ref = apply_rope_reference(x2, cos, sin);
    EXPECT_EQ(y.grad_fn()->name(), "nibble::RopeBackward");
    EXPECT_TRUE(torch::equal(y, y_ref));
    const Tensor dy = torch::randn(y.sizes());
    y.backward(dy);
    y_ref.backward(dy);
    EXPECT_TRUE(torch::equal(x1.grad(), x2.grad()));
    EXPECT_LT((y.to(torch::kFloat64) - ref_rope(qkv[part].to(torch::kFloat64), 10000.0)).abs().max().item<double>(),
              1e-5);
  }
}

TEST(GptModel, InvalidConfigsNameTheKey) {
  GptConfig cfg = tiny();
  cfg.heads = 5;
  try {
    cfg.validate();
    FAIL() << "heads = 5 with hidden = 32 was accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("model.heads = 5"), std::string::npos) << e.what();
  }
  cfg = tiny();
  cfg.recipe = "fp7";
  EXPECT_THROW(cfg.validate(), InvalidArgument);
}

}  // namespace
}  // namespace nibble::core::model
