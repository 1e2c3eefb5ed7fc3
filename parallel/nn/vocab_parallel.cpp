#include "parallel/nn/vocab_parallel.h"

#include "core/gemm.h"
#include "parallel/nn/torch_collectives.h"
#include "precision/error.h"

namespace nibble::parallel::nn {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

void check_ids(const torch::Tensor& ids, int64_t vocab, const std::string& who, int64_t ignore_index, bool allow_ignore) {
  if (ids.scalar_type() != torch::kInt64 && ids.scalar_type() != torch::kInt32)
    throw InvalidArgument(who + ": token ids must be int64 or int32, got " + std::string(c10::toString(ids.scalar_type())));
  if (ids.numel() == 0) return;
  const torch::Tensor valid = allow_ignore ? ids.ne(ignore_index) : torch::ones_like(ids, torch::kBool);
  const torch::Tensor bad = valid & (ids.lt(0) | ids.ge(vocab));
  if (bad.any().item<bool>()) {
    const int64_t v = ids.masked_select(bad).flatten()[0].item<int64_t>();
    throw InvalidArgument(who + ": token id " + std::to_string(v) + " is outside the vocabulary [0, " +
                          std::to_string(vocab) + ")" + (allow_ignore ? " (and is not the ignore_index)" : ""));
  }
}

struct CrossEntropy : torch::autograd::Function<CrossEntropy> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& logits, const torch::Tensor& targets,
                               Communicator* comm, int64_t ignore_index, bool fp64_sums) {
    const int64_t vl = logits.size(-1), start = comm->rank() * vl;
    // FP32, or FP64 with fp64_sums: then the sums over the vocabulary split across ranks are exact enough to
    // round to the single-rank loss and gradient bit for bit (core/model's cross_entropy does the same).
    const torch::Tensor l = logits.detach().reshape({-1, vl}).to(fp64_sums ? torch::kFloat64 : torch::kFloat32);
    const torch::Tensor t = targets.reshape({-1}).to(torch::kInt64);
    torch::Tensor row_max = std::get<0>(l.max(1)).contiguous();
    all_reduce_(row_max, ReduceOp::kMax, *comm, "vocab_parallel_cross_entropy max");
    const torch::Tensor shifted = l - row_max.unsqueeze(1);
    const torch::Tensor e = shifted.exp();
    const torch::Tensor valid = t.ne(ignore_index);
    const torch::Tensor mine = valid & t.ge(start) & t.lt(start + vl);
    const torch::Tensor local_t = torch::where(mine, t - start, torch::zeros_like(t));
    const torch::Tensor target_logit = shifted.gather(1, local_t.unsqueeze(1)).squeeze(1) * mine;
    torch::Tensor sums = torch::stack({e.sum(1), target_logit}).contiguous();
    all_reduce_(sums, ReduceOp::kSum, *comm, "vocab_parallel_cross_entropy sums");
    const torch::Tensor count = valid.sum().to(l.scalar_type());
    const torch::Tensor per_token = (sums[0].log() - sums[1]) * valid;
    ctx->save_for_backward({e / sums[0].unsqueeze(1), local_t, mine, valid, count});
    ctx->saved_data["shape"] = logits.sizes().vec();
    ctx->saved_data["dtype"] = static_cast<int64_t>(logits.scalar_type());
    // Mean over non-ignored tokens, as torch's cross_entropy (NaN when every token is ignored).
    return (per_token.sum() / count).to(logits.scalar_type());
  }
  static variable_list backward(AutogradContext* ctx, variable_list g) {
    const auto saved = ctx->get_saved_variables();
    torch::Tensor grad = saved[0].clone();  // softmax over the whole vocabulary, this rank's columns
    const torch::Tensor &local_t = saved[1], &mine = saved[2], &valid = saved[3], &count = saved[4];
    grad.scatter_add_(1, local_t.unsqueeze(1), -mine.to(grad.scalar_type()).unsqueeze(1));
    grad = grad * valid.unsqueeze(1) * (g[0].to(grad.scalar_type()) / count);
    const auto dtype = static_cast<torch::ScalarType>(ctx->saved_data["dtype"].toInt());
    return {grad.to(dtype).reshape(ctx->saved_data["shape"].toIntVector()), torch::Tensor(), torch::Tensor(),
            torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor vocab_parallel_embedding_partial(const torch::Tensor& tokens, const torch::Tensor& weight_shard,
                                               const Communicator& comm) {
  const std::string who = "vocab_parallel_embedding";
  if (weight_shard.dim() != 2)
    throw InvalidArgument(who + ": weight shard must be 2-D (V/size, hidden), got " + c10::str(weight_shard.sizes()));
  const int64_t vl = weight_shard.size(0), start = comm.rank() * vl;
  check_ids(tokens, vl * comm.size(), who, 0, false);
  const torch::Tensor t = tokens.to(torch::kInt64);
  const torch::Tensor mine = t.ge(start) & t.lt(start + vl);
  const torch::Tensor local = torch::where(mine, t - start, torch::zeros_like(t));
  return torch::embedding(weight_shard, local).masked_fill(mine.logical_not().unsqueeze(-1), 0.0);
}

torch::Tensor vocab_parallel_cross_entropy(const torch::Tensor& logits_shard, const torch::Tensor& targets,
                                           Communicator& comm, int64_t ignore_index, bool fp64_sums) {
  const std::string who = "vocab_parallel_cross_entropy";
  if (logits_shard.dim() < 1) throw InvalidArgument(who + ": logits need a vocabulary dim");
  const auto lead = logits_shard.sizes().slice(0, logits_shard.dim() - 1);
  if (targets.sizes() != lead)
    throw InvalidArgument(who + ": targets have shape " + c10::str(targets.sizes()) +
                          " but the logits shard " + c10::str(logits_shard.sizes()) + " needs " + c10::str(lead));
  if (!logits_shard.is_floating_point())
    throw InvalidArgument(who + ": logits must be floating point, got " +
                          std::string(c10::toString(logits_shard.scalar_type())));
  check_ids(targets, logits_shard.size(-1) * comm.size(), who, ignore_index, true);
  return CrossEntropy::apply(logits_shard, targets, &comm, ignore_index, fp64_sums);
}

}  // namespace nibble::parallel::nn
