#include "parallel/nn/context_parallel_attention.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "parallel/nn/host_staging.h"
#include "precision/error.h"

namespace nibble::parallel::nn {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;
using torch::indexing::Slice;

// Message tags of the ring (one Communicator may carry other p2p traffic; these keep the streams apart).
constexpr int kTagForwardKv = 7101, kTagBackwardKv = 7102, kTagBackwardDkv = 7103;

std::string shape_str(const torch::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

DType comm_dtype(const torch::Tensor& t, const std::string& who) {
  switch (t.scalar_type()) {
    case torch::kFloat32:
      return DType::kFloat32;
    case torch::kFloat64:
      return DType::kFloat64;
    case torch::kBFloat16:
      return DType::kBFloat16;
    default:
      throw InvalidArgument(who + ": dtype " + std::string(c10::toString(t.scalar_type())) +
                            " is not supported; valid: float32, float64, bfloat16");
  }
}

// The math dtype: float64 stays float64, everything else runs in float32 (bfloat16 blocks, FP32 merge).
torch::ScalarType math_type(const torch::Tensor& t) {
  return t.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
}

// Checks shared by both methods, before anything is allocated or sent. Returns heads / kv_heads.
int64_t check_qkv(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, const Communicator& comm,
                  const std::string& who) {
  for (const auto* t : {&q, &k, &v}) {
    if (t->dim() != 4)
      throw InvalidArgument(who + ": q, k, v must be [batch, heads, seq, head_dim]; got a tensor of shape " +
                            shape_str(*t));
    comm_dtype(*t, who);
  }
  if (k.sizes() != v.sizes())
    throw InvalidArgument(who + ": k " + shape_str(k) + " and v " + shape_str(v) + " must have the same shape");
  if (q.scalar_type() != k.scalar_type() || q.scalar_type() != v.scalar_type())
    throw InvalidArgument(who + ": q, k, v must share one dtype");
  if (q.size(0) != k.size(0) || q.size(2) != k.size(2) || q.size(3) != k.size(3))
    throw InvalidArgument(who + ": q " + shape_str(q) + " and k " + shape_str(k) +
                          " must agree in batch, local sequence and head_dim");
  if (k.size(1) < 1 || q.size(1) % k.size(1) != 0)
    throw InvalidArgument(who + ": kv heads = " + std::to_string(k.size(1)) +
                          " must divide heads = " + std::to_string(q.size(1)) + " (GQA)");
  if (q.size(2) % 2 != 0 || q.size(2) == 0)
    throw InvalidArgument(who + ": the local sequence has " + std::to_string(q.size(2)) +
                          " tokens; it must be two equal chunks (S/cp with S a multiple of 2*cp = " +
                          std::to_string(2 * comm.size()) + "; split with context_parallel_split)");
  return q.size(1) / k.size(1);
}

double scale_of(std::optional<double> scale, const torch::Tensor& q) {
  return scale ? *scale : 1.0 / std::sqrt(static_cast<double>(q.size(3)));
}

// KV heads expanded to query heads (SDPA enable_gqa: query head h uses kv head h / group).
torch::Tensor expand_kv(const torch::Tensor& t, int64_t group) {
  return group == 1 ? t : t.repeat_interleave(group, 1);
}
torch::Tensor reduce_kv(const torch::Tensor& t, int64_t group) {
  if (group == 1) return t;
  return t.view({t.size(0), t.size(1) / group, group, t.size(2), t.size(3)}).sum(2);
}

// Which query rows and key columns of a step's block interact, for KV that came from cp rank `src`
// (chunks src and 2cp-1-src) seen by rank `rank` (chunks rank and 2cp-1-rank), c tokens per chunk:
//  - src == rank: all rows vs all columns, causal within the local concatenation (its positions increase);
//  - src <  rank: all rows vs the first KV chunk only (the second lies after both query chunks), no mask;
//  - src >  rank: the second query chunk only vs all columns, no mask.
// Every non-diagonal step is half a block: the load balance of the 2*cp split.
struct Block {
  Slice rows, cols;
  bool causal;
};
Block block_for(int src, int rank, int64_t c) {
  if (src == rank) return {Slice(), Slice(), true};
  if (src < rank) return {Slice(), Slice(0, c), false};
  return {Slice(c, 2 * c), Slice(), false};
}

torch::Tensor causal_mask(int64_t n, const torch::Device& device) {
  return torch::ones({n, n}, torch::TensorOptions().dtype(torch::kBool).device(device)).triu(1);
}

// One block of attention: normalised output and log-sum-exp per query row.
std::pair<torch::Tensor, torch::Tensor> attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                               double scale, bool causal) {
  auto s = torch::matmul(q, k.transpose(-2, -1)) * scale;
  if (causal) s = s.masked_fill(causal_mask(s.size(-1), s.device()), -std::numeric_limits<double>::infinity());
  auto lse = torch::logsumexp(s, -1);
  auto p = torch::exp(s - lse.unsqueeze(-1));
  return {torch::matmul(p, v), lse};
}

// The ring's KV buffer: k and v flattened into one message.
torch::Tensor pack(std::initializer_list<torch::Tensor> parts) {
  std::vector<torch::Tensor> flat;
  for (const auto& t : parts) flat.push_back(t.reshape({-1}));
  return torch::cat(flat).contiguous();
}

class RingAttentionFn : public torch::autograd::Function<RingAttentionFn> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& q_in, const torch::Tensor& k_in,
                               const torch::Tensor& v_in, int64_t comm_ptr, double scale) {
    auto& comm = *reinterpret_cast<Communicator*>(comm_ptr);
    const std::string who = "ring_attention (forward)";
    const int n = comm.size(), r = comm.rank();
    const int64_t group = q_in.size(1) / k_in.size(1), c = q_in.size(2) / 2;
    const auto mt = math_type(q_in);
    auto q = q_in.to(mt).contiguous();
    // K/V travel in their own dtype (bfloat16 halves the traffic), computed on in the math dtype.
    torch::Tensor cur = pack({k_in, v_in}), nxt = torch::empty_like(cur);
    const int64_t nk = k_in.numel();
    torch::Tensor out, lse;
    for (int i = 0; i < n; ++i) {
      TensorSendRecv work;
      if (i + 1 < n)  // the next block's exchange runs while this block computes
        work = TensorSendRecv(comm, cur, (r + 1) % n, nxt, (r - 1 + n) % n, kTagForwardKv, who);
      const int src = (r - i + n) % n;
      const Block b = block_for(src, r, c);
      auto k = expand_kv(cur.narrow(0, 0, nk).view(k_in.sizes()).to(mt), group).index({Slice(), Slice(), b.cols});
      auto v = expand_kv(cur.narrow(0, nk, nk).view(v_in.sizes()).to(mt), group).index({Slice(), Slice(), b.cols});
      auto [o_b, lse_b] = attend(q.index({Slice(), Slice(), b.rows}), k, v, scale, b.causal);
      if (i == 0) {
        out = o_b;
        lse = lse_b;
      } else {
        // Log-sum-exp merge of the rows this block touched: lse = log(e^lse + e^lse_b), out re-weighted.
        auto lse_rows = lse.index({Slice(), Slice(), b.rows});
        auto merged = torch::logaddexp(lse_rows, lse_b);
        auto out_rows = out.index({Slice(), Slice(), b.rows});
        out.index_put_({Slice(), Slice(), b.rows}, torch::exp(lse_rows - merged).unsqueeze(-1) * out_rows +
                                                       torch::exp(lse_b - merged).unsqueeze(-1) * o_b);
        lse.index_put_({Slice(), Slice(), b.rows}, merged);
      }
      if (work.pending()) {
        work.wait();
        std::swap(cur, nxt);
      }
    }
    ctx->save_for_backward({q_in, k_in, v_in, out, lse});
    ctx->saved_data["comm"] = comm_ptr;
    ctx->saved_data["scale"] = scale;
    return out.to(q_in.scalar_type());
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &q_in = saved[0], &k_in = saved[1], &v_in = saved[2], &out = saved[3], &lse = saved[4];
    auto& comm = *reinterpret_cast<Communicator*>(ctx->saved_data["comm"].toInt());
    const double scale = ctx->saved_data["scale"].toDouble();
    const std::string who = "ring_attention (backward)";
    const int n = comm.size(), r = comm.rank();
    const int64_t group = q_in.size(1) / k_in.size(1), c = q_in.size(2) / 2;
    const auto mt = math_type(q_in);
    auto q = q_in.to(mt);
    auto dout = grads[0].to(mt);
    // D = rowsum(dO * O) uses the merged output: every block's softmax gradient needs the global one.
    auto d_row = (dout * out).sum(-1, /*keepdim=*/true);
    auto dq = torch::zeros_like(q);
    const int64_t nk = k_in.numel();
    torch::Tensor kv = pack({k_in, v_in}), kv_next = torch::empty_like(kv);
    // dK/dV of the visiting block, accumulated by every rank it visits, then sent on with it.
    torch::Tensor dkv = torch::zeros({2 * nk}, q.options()), dkv_next = torch::empty_like(dkv);
    for (int i = 0; i < n; ++i) {
      TensorSendRecv work;
      if (i + 1 < n)
        work = TensorSendRecv(comm, kv, (r + 1) % n, kv_next, (r - 1 + n) % n, kTagBackwardKv, who);
      const int src = (r - i + n) % n;
      const Block b = block_for(src, r, c);
      auto k = expand_kv(kv.narrow(0, 0, nk).view(k_in.sizes()).to(mt), group).index({Slice(), Slice(), b.cols});
      auto v = expand_kv(kv.narrow(0, nk, nk).view(v_in.sizes()).to(mt), group).index({Slice(), Slice(), b.cols});
      auto qr = q.index({Slice(), Slice(), b.rows});
      auto dor = dout.index({Slice(), Slice(), b.rows});
      auto s = torch::matmul(qr, k.transpose(-2, -1)) * scale;
      if (b.causal) s = s.masked_fill(causal_mask(s.size(-1), s.device()), -std::numeric_limits<double>::infinity());
      auto p = torch::exp(s - lse.index({Slice(), Slice(), b.rows}).unsqueeze(-1));
      auto dv = torch::matmul(p.transpose(-2, -1), dor);
      auto ds = p * (torch::matmul(dor, v.transpose(-2, -1)) - d_row.index({Slice(), Slice(), b.rows}));
      dq.index({Slice(), Slice(), b.rows}) += torch::matmul(ds, k) * scale;
      auto dk = torch::matmul(ds.transpose(-2, -1), qr) * scale;
      auto dk_acc = dkv.narrow(0, 0, nk).view(k_in.sizes());
      auto dv_acc = dkv.narrow(0, nk, nk).view(v_in.sizes());
      dk_acc.index({Slice(), Slice(), b.cols}) += reduce_kv(dk, group);
      dv_acc.index({Slice(), Slice(), b.cols}) += reduce_kv(dv, group);
      if (work.pending()) {
        work.wait();
        std::swap(kv, kv_next);
      }
      // The accumulated dK/dV follow their block; after the last step each arrives at its owner.
      if (n > 1) {
        TensorSendRecv(comm, dkv, (r + 1) % n, dkv_next, (r - 1 + n) % n, kTagBackwardDkv, who).wait();
        std::swap(dkv, dkv_next);
      }
    }
    auto dk = dkv.narrow(0, 0, nk).view(k_in.sizes()).to(k_in.scalar_type());
    auto dv = dkv.narrow(0, nk, nk).view(v_in.sizes()).to(v_in.scalar_type());
    return {dq.to(q_in.scalar_type()), dk, dv, torch::Tensor(), torch::Tensor()};
  }
};

// ---- Ulysses ------------------------------------------------------------------------------------------------

// Global chunk g of the 2n-chunk sequence sits, after the all-to-all, at position (rank j, half h) -> 2j + h.
torch::Tensor natural_order(int n) {
  std::vector<int64_t> idx(2 * n);
  for (int g = 0; g < 2 * n; ++g) idx[g] = g < n ? 2 * g : 2 * (2 * n - 1 - g) + 1;
  return torch::tensor(idx, torch::kLong);
}
torch::Tensor split_order(int n) {  // the inverse permutation
  std::vector<int64_t> idx(2 * n);
  for (int j = 0; j < n; ++j) {
    idx[2 * j] = j;
    idx[2 * j + 1] = 2 * n - 1 - j;
  }
  return torch::tensor(idx, torch::kLong);
}

// Block j of `send` to rank j, block i of the result from rank i (staged through host memory on MPI).
torch::Tensor all_to_all_blocks(const torch::Tensor& send, Communicator& comm, const std::string& who) {
  HostStaged in(send, /*copy_in=*/true, comm);
  torch::Tensor recv = torch::empty_like(send);
  HostStaged out(recv, /*copy_in=*/false, comm);
  comm.all_to_all(ConstView{in.host().data_ptr(), static_cast<size_t>(in.host().numel()), comm_dtype(send, who)},
                  View{out.host().data_ptr(), static_cast<size_t>(out.host().numel()), comm_dtype(send, who)});
  out.copy_out();
  return recv;
}

// [B, H, s, D] sequence-sharded -> [B, H/n, S, D] head-sharded, the sequence in natural order.
torch::Tensor seq_to_head(const torch::Tensor& x, Communicator& comm) {
  const std::string who = "ulysses_attention";
  const int64_t n = comm.size(), B = x.size(0), H = x.size(1), s = x.size(2), D = x.size(3), c = s / 2;
  auto send = x.reshape({B, n, H / n, s, D}).permute({1, 0, 2, 3, 4}).contiguous();
  auto recv = all_to_all_blocks(send, comm, who);
  auto full = recv.view({n, B, H / n, 2, c, D}).permute({1, 2, 0, 3, 4, 5}).reshape({B, H / n, 2 * n, c, D});
  return full.index_select(2, natural_order(static_cast<int>(n)).to(x.device())).reshape({B, H / n, 2 * n * c, D});
}

// The inverse: [B, H/n, S, D] -> [B, H, s, D].
torch::Tensor head_to_seq(const torch::Tensor& y, Communicator& comm) {
  const std::string who = "ulysses_attention";
  const int64_t n = comm.size(), B = y.size(0), Hn = y.size(1), S = y.size(2), D = y.size(3), c = S / (2 * n);
  auto parts = y.reshape({B, Hn, 2 * n, c, D}).index_select(2, split_order(static_cast<int>(n)).to(y.device()));
  auto send = parts.view({B, Hn, n, 2 * c, D}).permute({2, 0, 1, 3, 4}).contiguous();
  auto recv = all_to_all_blocks(send, comm, who);
  return recv.permute({1, 0, 2, 3, 4}).reshape({B, n * Hn, 2 * c, D});
}

class SeqToHeadFn : public torch::autograd::Function<SeqToHeadFn> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, int64_t comm_ptr) {
    ctx->saved_data["comm"] = comm_ptr;
    return seq_to_head(x, *reinterpret_cast<Communicator*>(comm_ptr));
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto& comm = *reinterpret_cast<Communicator*>(ctx->saved_data["comm"].toInt());
    return {head_to_seq(grads[0].contiguous(), comm), torch::Tensor()};
  }
};

class HeadToSeqFn : public torch::autograd::Function<HeadToSeqFn> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& y, int64_t comm_ptr) {
    ctx->saved_data["comm"] = comm_ptr;
    return head_to_seq(y, *reinterpret_cast<Communicator*>(comm_ptr));
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto& comm = *reinterpret_cast<Communicator*>(ctx->saved_data["comm"].toInt());
    return {seq_to_head(grads[0].contiguous(), comm), torch::Tensor()};
  }
};

void check_split_args(const torch::Tensor& x, int64_t dim, int cp, const std::string& who) {
  if (cp < 1) throw InvalidArgument(who + ": cp = " + std::to_string(cp) + "; must be >= 1");
  if (dim < -x.dim() || dim >= x.dim())
    throw InvalidArgument(who + ": dim " + std::to_string(dim) + " is out of range for a tensor of shape " +
                          shape_str(x));
}

}  // namespace

torch::Tensor context_parallel_split(const torch::Tensor& x, int64_t dim, int cp, int rank) {
  const std::string who = "context_parallel_split";
  check_split_args(x, dim, cp, who);
  if (rank < 0 || rank >= cp)
    throw InvalidArgument(who + ": rank " + std::to_string(rank) + " is outside [0, cp = " + std::to_string(cp) + ")");
  const int64_t S = x.size(dim), n = 2 * cp;
  if (S % n != 0 || S == 0) {
    const int64_t down = S / n * n, up = (S / n + 1) * n;
    throw InvalidArgument(who + ": sequence length " + std::to_string(S) + " is not a multiple of 2*cp = " +
                          std::to_string(n) + " (load-balanced causal chunks; nibble does not pad)" + "; use " +
                          (down > 0 ? std::to_string(down) + " or " : std::string()) + std::to_string(up));
  }
  const int64_t c = S / n;
  return torch::cat({x.narrow(dim, rank * c, c), x.narrow(dim, (n - 1 - rank) * c, c)}, dim).contiguous();
}

torch::Tensor context_parallel_merge(const torch::Tensor& x, int64_t dim, int cp) {
  const std::string who = "context_parallel_merge";
  check_split_args(x, dim, cp, who);
  const int64_t S = x.size(dim), n = 2 * cp;
  if (S % n != 0)
    throw InvalidArgument(who + ": gathered length " + std::to_string(S) +
                          " is not a multiple of 2*cp = " + std::to_string(n));
  const int64_t c = S / n;
  std::vector<torch::Tensor> chunks(n);
  for (int j = 0; j < cp; ++j) {
    chunks[j] = x.narrow(dim, 2 * j * c, c);
    chunks[n - 1 - j] = x.narrow(dim, (2 * j + 1) * c, c);
  }
  return torch::cat(chunks, dim);
}

torch::Tensor ring_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, Communicator& comm,
                             std::optional<double> scale) {
  check_qkv(q, k, v, comm, "ring_attention");
  return RingAttentionFn::apply(q, k, v, reinterpret_cast<int64_t>(&comm), scale_of(scale, q));
}

torch::Tensor ulysses_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                Communicator& comm, std::optional<double> scale) {
  const std::string who = "ulysses_attention";
  const int64_t group = check_qkv(q, k, v, comm, who);
  const int n = comm.size();
  if (q.size(1) % n != 0)
    throw InvalidArgument(who + ": heads = " + std::to_string(q.size(1)) + " is not divisible by the cp size " +
                          std::to_string(n) + " (each rank attends over whole heads); use ring_attention or a cp " +
                          "size dividing the heads");
  if (k.size(1) % n != 0)
    throw InvalidArgument(who + ": kv heads = " + std::to_string(k.size(1)) + " is not divisible by the cp size " +
                          std::to_string(n) + "; use ring_attention or a cp size dividing the kv heads");
  const auto ptr = reinterpret_cast<int64_t>(&comm);
  auto qh = SeqToHeadFn::apply(q.contiguous(), ptr);
  auto kh = SeqToHeadFn::apply(k.contiguous(), ptr);
  auto vh = SeqToHeadFn::apply(v.contiguous(), ptr);
  auto oh = at::scaled_dot_product_attention(qh, kh, vh, {}, 0.0, /*is_causal=*/true, scale_of(scale, q),
                                             /*enable_gqa=*/group != 1);
  return HeadToSeqFn::apply(oh.contiguous(), ptr);
}

}  // namespace nibble::parallel::nn
