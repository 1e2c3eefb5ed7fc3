#include "parallel/nn/tp_state_reshard.h"

#include "optim/state_codec.h"
#include "parallel/nn/state_fields.h"
#include "precision/error.h"

namespace nibble::parallel::nn {
namespace {

// The full tensor as [A, D, B] around the shard dim.
struct Around {
  int64_t A = 1, D = 1, B = 1;
};

Around around(const std::vector<int64_t>& shape, int dim) {
  Around s;
  for (int d = 0; d < static_cast<int>(shape.size()); ++d) {
    const int64_t n = shape[static_cast<size_t>(d)];
    if (d < dim) s.A *= n;
    if (d == dim) s.D = n;
    if (d > dim) s.B *= n;
  }
  return s;
}

// Splits of one tensor: the saved one (T shards) and the new one, and the parameter they are of.
struct Split {
  const std::string& param;
  Around s;
  int saved_tp, tp, rank;
  int64_t saved_numel() const { return s.A * (s.D / saved_tp) * s.B; }
  int64_t numel() const { return s.A * (s.D / tp) * s.B; }
};

// Per-shard tensors (each A·(D/T)·B elements in the shard's row-major order) -> the full [A, D, B] tensor.
torch::Tensor assemble(const std::vector<torch::Tensor>& pieces, const Split& p) {
  std::vector<torch::Tensor> v;
  for (const torch::Tensor& t : pieces) v.push_back(t.reshape({p.s.A, p.s.D / p.saved_tp, p.s.B}));
  return torch::cat(v, 1);
}
torch::Tensor my_part(const torch::Tensor& full, const Split& p) {
  const int64_t part = p.s.D / p.tp;
  return full.narrow(1, p.rank * part, part).contiguous().reshape({-1});
}

// Side data (one float per group of G) of aligned splits, in the full tensor's group order and back.
torch::Tensor assemble_groups(const std::vector<torch::Tensor>& sides, const Split& p, int64_t G) {
  if (p.saved_tp == 1) return sides[0];
  std::vector<torch::Tensor> v;
  for (const torch::Tensor& t : sides) v.push_back(t.reshape({p.s.A, (p.s.D / p.saved_tp) * p.s.B / G}));
  return torch::cat(v, 1).reshape({-1});
}
torch::Tensor my_groups(const torch::Tensor& full, const Split& p, int64_t G) {
  if (p.tp == 1) return full.clone();
  const int64_t row = (p.s.D / p.tp) * p.s.B / G;
  return full.reshape({p.s.A, p.s.D * p.s.B / G}).narrow(1, p.rank * row, row).contiguous().reshape({-1});
}

const torch::Tensor& need(const std::map<std::string, torch::Tensor>& f, const std::string& field, int64_t numel,
                          const Split& p, int t) {
  auto it = f.find(field);
  if (it == f.end())
    throw InvalidArgument("resharding the optimizer state of '" + p.param + "': saved tp rank " + std::to_string(t) +
                          " has no field '" + field + "'");
  if (it->second.numel() != numel)
    throw InvalidArgument("resharding the optimizer state of '" + p.param + "': saved tp rank " + std::to_string(t) +
                          "'s '" + field + "' has " + std::to_string(it->second.numel()) + " elements, its shard needs " +
                          std::to_string(numel));
  return it->second;
}

}  // namespace

bool tp_groups_aligned(const std::vector<int64_t>& full_shape, int shard_dim, int tp, int64_t group) {
  if (tp == 1 || group <= 1) return true;
  const Around s = around(full_shape, shard_dim);
  return ((s.D / tp) * s.B) % group == 0;
}

TpStateReshard reshard_tp_state(const std::string& param, const std::vector<std::map<std::string, torch::Tensor>>& saved,
                                int shard_dim, const std::vector<int64_t>& full_shape, int tp, int rank,
                                const optim::OptimizerConfig& config) {
  if (saved.empty()) throw InvalidArgument("resharding the optimizer state of '" + param + "': no saved shards");
  TpStateReshard r;
  const int saved_tp = static_cast<int>(saved.size());
  if (shard_dim < 0 || saved_tp == tp) {  // replicated, or the same split: the saved shard as it is
    for (const auto& [k, t] : saved[shard_dim < 0 ? 0 : static_cast<size_t>(rank)]) r.fields[k] = t.clone();
    return r;
  }
  const Split p{param, around(full_shape, shard_dim), saved_tp, tp, rank};
  if (p.s.D % saved_tp != 0 || p.s.D % tp != 0)
    throw InvalidArgument("resharding the optimizer state of '" + param + "': dim " + std::to_string(shard_dim) +
                          " of size " + std::to_string(p.s.D) + " does not split into " + std::to_string(saved_tp) +
                          " and " + std::to_string(tp) + " shards");
  std::vector<int64_t> shard_shape = full_shape;
  shard_shape[static_cast<size_t>(shard_dim)] /= tp;

  const std::vector<std::string> keys = optim::moment_keys(config);
  const optim::StateCodec codec = optim::parse_state_codec(config.state);
  const optim::MomentLayout SL = optim::moment_layout(codec, p.saved_numel()), NL = optim::moment_layout(codec, p.numel());
  // Every field the saved shards may hold: step, master, the moments and their side arrays.
  std::map<std::string, bool> known = {{"step", true}, {"master", true}};
  for (const std::string& k : keys) {
    known[k] = true;
    for (const char* side : kStateSides) known[k + side] = true;
  }
  for (const auto& [field, unused] : saved[0])
    if (!known.count(field))
      throw InvalidArgument("resharding the optimizer state of '" + param + "': unknown field '" + field +
                            "' for optimizer '" + config.kind + "' with state '" + config.state + "'");

  r.fields["step"] = need(saved[0], "step", 1, p, 0).clone();
  auto elementwise = [&](const std::string& field, const std::vector<int64_t>& shape) {
    std::vector<torch::Tensor> pieces;
    for (int t = 0; t < saved_tp; ++t) pieces.push_back(need(saved[static_cast<size_t>(t)], field, p.saved_numel(), p, t));
    r.fields[field] = my_part(assemble(pieces, p), p).reshape(shape);
  };
  if (saved[0].count("master")) elementwise("master", shard_shape);

  const bool block = SL.codec == NL.codec && optim::codec_group_size(NL.codec) > 0;
  const int64_t G = block ? optim::codec_group_size(NL.codec) : 0;
  const bool aligned = block && tp_groups_aligned(full_shape, shard_dim, saved_tp, G) &&
                       tp_groups_aligned(full_shape, shard_dim, tp, G);
  for (size_t k = 0; k < keys.size(); ++k) {
    const std::string& key = keys[k];
    if (SL.codec == NL.codec && !block) {  // fp32 / bf16 values: elementwise
      elementwise(key, shard_shape);
    } else if (aligned) {  // every new group is a saved group: codes and side data copied
      elementwise(key, {p.numel()});
      for (int s = 0; s < 3; ++s) {
        if (!has_side(NL, s)) continue;
        const std::string field = key + kStateSides[s];
        std::vector<torch::Tensor> sides;
        for (int t = 0; t < saved_tp; ++t) sides.push_back(need(saved[static_cast<size_t>(t)], field, SL.groups, p, t));
        r.fields[field] = my_groups(assemble_groups(sides, p, G), p, G);
      }
    } else {  // decoded, reassembled, encoded for the new groups
      std::vector<torch::Tensor> pieces;
      for (int t = 0; t < saved_tp; ++t) {
        std::map<std::string, torch::Tensor> f = saved[static_cast<size_t>(t)];
        need(f, key, p.saved_numel(), p, t);
        for (int s = 0; s < 3; ++s)
          if (has_side(SL, s)) need(f, key + kStateSides[s], SL.groups, p, t);
        for (auto& [name, tensor] : f) tensor = tensor.contiguous();
        pieces.push_back(decode_fields(codec, f, p.saved_numel(), k == 0, key));
      }
      encode_fields(codec, my_part(assemble(pieces, p), p), k == 0, key, r.fields);
      r.exact = false;
      r.why_not = SL.codec != NL.codec
                      ? "state '" + config.state + "' keeps FP32 under " + std::to_string(optim::kInt8MinElements) +
                            " elements: the saved shards have " + std::to_string(p.saved_numel()) + ", the new " +
                            std::to_string(p.numel()) + ", so the moments were re-encoded"
                      : "the " + std::to_string(G) + "-element groups of state '" + config.state + "' do not line " +
                            "up between the saved split (tp=" + std::to_string(saved_tp) + ") and this one (tp=" +
                            std::to_string(tp) + ") of shape " + c10::str(c10::IntArrayRef(full_shape)) +
                            " along dim " + std::to_string(shard_dim) + ", so the moments were decoded and " +
                            "re-encoded (rounded once more)";
    }
  }
  return r;
}

}  // namespace nibble::parallel::nn
