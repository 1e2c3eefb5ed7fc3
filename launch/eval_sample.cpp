#include "launch/eval_sample.h"

#include <ATen/CPUGeneratorImpl.h>

#include "launch/grad_sync.h"
#include "launch/model_layout.h"

namespace nibble::launch {
namespace {

// The mean loss of the pipeline's head over this rank's tokens, shared with every pp rank (0 elsewhere).
double head_loss_everywhere(core::model::Gpt& model, const parallel::Mesh& mesh, const torch::Tensor& tokens,
                            const torch::Tensor& targets) {
  const torch::Tensor h = pipeline_forward(model, mesh, tokens);
  double loss = h.defined() ? model.head_loss(h, targets).item<double>() : 0.0;
  if (mesh.pp().size() > 1) mesh.pp().all_reduce<double>(std::span<double>(&loss, 1), parallel::ReduceOp::kSum);
  return loss;
}

}  // namespace

double evaluate(const TrainConfig& c, core::model::Gpt& model, const core::data::BatchSampler& data,
                const parallel::Mesh& mesh, int64_t batches) {
  torch::NoGradGuard no_grad;
  const int64_t per_dp = c.global_batch / c.dp;
  double sum = 0.0;
  int64_t chunks = 0;
  for (int64_t e = 0; e < batches; ++e)
    for (int64_t first = 0; first < per_dp; first += c.micro_batch) {
      const int64_t count = std::min(c.micro_batch, per_dp - first);
      core::data::Batch b = data.eval_batch(e, c.global_batch, mesh.coord().dp * per_dp + first, count);
      sum += head_loss_everywhere(model, mesh, context_parallel_part(b.tokens, mesh).to(model.device()),
                                  context_parallel_part(b.targets, mesh).to(model.device()));
      ++chunks;
    }
  return mean_over(mesh.dp_cp(), sum / static_cast<double>(chunks));
}

namespace {

// The next-token logits after `window` (full vocabulary, float32), on every rank: the head's vocabulary
// slices gathered over tp, the last position's row taken from the cp rank holding it (rank 0: its second
// chunk ends the sequence) and broadcast over cp and pp.
torch::Tensor next_token_logits(const TrainConfig& c, core::model::Gpt& model, const parallel::Mesh& mesh,
                                const std::vector<int64_t>& window) {
  const torch::Tensor tokens =
      context_parallel_part(torch::tensor(window, torch::kInt64).view({1, -1}), mesh).to(model.device());
  const torch::Tensor h = pipeline_forward(model, mesh, tokens);
  torch::Tensor full = torch::empty({c.model.vocab}, torch::kFloat32);
  if (h.defined()) {
    const torch::Tensor shard = model.head_logits(h).select(0, -1).to(torch::kCPU, torch::kFloat32).contiguous();
    if (mesh.tp().size() > 1)
      mesh.tp().all_gather<float>(std::span<const float>(shard.data_ptr<float>(), static_cast<size_t>(shard.numel())),
                                  std::span<float>(full.data_ptr<float>(), static_cast<size_t>(full.numel())));
    else
      full.copy_(shard);
  }
  const std::span<float> view(full.data_ptr<float>(), static_cast<size_t>(full.numel()));
  if (mesh.cp().size() > 1) mesh.cp().broadcast<float>(view, 0);
  if (mesh.pp().size() > 1) mesh.pp().broadcast<float>(view, head_pp_rank(mesh));
  return full;
}

}  // namespace

// Autoregressive sampling, in lockstep on every rank (the forward is collective): every rank holds the same
// logits and draws with the same seeded generator, so all agree.
std::string sample(const TrainConfig& c, core::model::Gpt& model, const parallel::Mesh& mesh,
                   const core::data::Tokenizer& tok) {
  torch::NoGradGuard no_grad;
  std::vector<int64_t> ids;
  for (uint16_t t : tok.encode(c.sample_prompt)) ids.push_back(t);
  if (ids.empty()) ids.push_back('\n');
  auto gen = at::make_generator<at::CPUGeneratorImpl>(c.data_seed + 1);
  const int64_t seq = c.model.seq_len;
  for (int64_t i = 0; i < c.sample_tokens; ++i) {
    std::vector<int64_t> window(ids.end() - std::min<int64_t>(seq, static_cast<int64_t>(ids.size())), ids.end());
    // Sequence and context parallel split the tokens: pad on the left to a whole window.
    if (c.sequence_parallel || c.cp > 1) window.insert(window.begin(), static_cast<size_t>(seq) - window.size(), '\n');
    const torch::Tensor logits = next_token_logits(c, model, mesh, window);
    torch::Tensor probs = torch::softmax(logits.to(torch::kFloat64) / c.sample_temperature, -1);
    ids.push_back(torch::multinomial(probs, 1, false, gen).item<int64_t>());
  }
  std::string text = tok.decode(ids);
  // An undertrained byte model emits stray bytes: keep the printed sample valid ASCII text.
  for (char& ch : text)
    if (static_cast<unsigned char>(ch) >= 0x80 || (static_cast<unsigned char>(ch) < 0x20 && ch != '\n')) ch = '?';
  return text;
}

}  // namespace nibble::launch
