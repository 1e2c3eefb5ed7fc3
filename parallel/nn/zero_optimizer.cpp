#include "parallel/nn/zero_optimizer.h"

#include <algorithm>

#include "optim/fused_step.h"
#include "optim/state_codec.h"
#include "optim/torch/grad_norm.h"
#include "parallel/nn/state_fields.h"
#include "precision/error.h"

namespace nibble::parallel::nn {
namespace {

constexpr int64_t kFp8GatherBlock = 128;  // elements per FP32 scale of the FP8 all-gather
constexpr float kE4M3Max = 448.0f;

struct Piece {
  size_t param;              // registration index
  int64_t begin, end;        // elements of the parameter
  int64_t shard_at;          // where the piece starts in the shard buffer
};

View raw_view(torch::Tensor& t) {
  const DType d = t.scalar_type() == torch::kFloat32    ? DType::kFloat32
                  : t.scalar_type() == torch::kBFloat16 ? DType::kBFloat16
                                                        : DType::kUInt8;
  return View{t.data_ptr(), static_cast<size_t>(t.numel()), d};
}
ConstView raw_const_view(torch::Tensor& t) {
  const View v = raw_view(t);
  return ConstView{v.data, v.count, v.dtype};
}

}  // namespace

struct ZeroOptimizer::Impl {
  std::vector<std::pair<std::string, torch::Tensor>> params;
  optim::OptimizerConfig config;
  Communicator& dp;
  ZeroOptions options;
  std::unique_ptr<GradBuckets> buckets;
  torch::ScalarType dtype = torch::kFloat32;
  torch::Tensor shard_param, flat_param;
  std::vector<Piece> pieces;
  std::unique_ptr<optim::Optimizer> shard_opt;
  bool grads_ready = false;

  Impl(std::vector<std::pair<std::string, torch::Tensor>> p, optim::OptimizerConfig c, Communicator& comm,
       ZeroOptions o)
      : params(std::move(p)), config(std::move(c)), dp(comm), options(o) {}

  const FlatLayout& layout() const { return buckets->layout(); }

  std::vector<torch::Tensor> piece_grads() const {
    std::vector<torch::Tensor> g;
    for (const Piece& pc : pieces) g.push_back(buckets->shard_grad().narrow(0, pc.shard_at, pc.end - pc.begin));
    return g;
  }

  void gather() {
    torch::NoGradGuard no_grad;
    if (!options.fp8_all_gather) {
      dp.all_gather(raw_const_view(shard_param), raw_view(flat_param));
    } else {
      // Current scaling per 128-block (NUMERICS.md): enc = 448/amax, q = satfinite(RNE(x*enc)), x' = q/enc.
      torch::Tensor x = shard_param.to(torch::kFloat32).view({-1, kFp8GatherBlock});
      torch::Tensor amax = std::get<0>(x.abs().max(1));
      // Explicit divisions: ATen computes `scalar / tensor` as scalar * reciprocal(tensor), which is not the
      // correctly rounded quotient NUMERICS.md asks for.
      torch::Tensor enc = torch::where(amax > 0, torch::full_like(amax, kE4M3Max).div(amax), torch::ones_like(amax));
      torch::Tensor dec = torch::ones_like(enc).div(enc);
      torch::Tensor codes = (x * enc.unsqueeze(1)).clamp(-kE4M3Max, kE4M3Max).to(torch::kFloat8_e4m3fn)
                                .view(torch::kUInt8).reshape({-1}).contiguous();
      torch::Tensor all_codes = torch::empty({layout().total}, torch::kUInt8);
      torch::Tensor all_dec = torch::empty({layout().total / kFp8GatherBlock}, torch::kFloat32);
      dp.all_gather(raw_const_view(codes), raw_view(all_codes));
      dp.all_gather(raw_const_view(dec), raw_view(all_dec));
      torch::Tensor values = all_codes.view(torch::kFloat8_e4m3fn).to(torch::kFloat32).view({-1, kFp8GatherBlock}) *
                             all_dec.unsqueeze(1);
      flat_param.copy_(values.reshape({-1}));
    }
    for (size_t i = 0; i < params.size(); ++i) {
      torch::Tensor& p = params[i].second;
      p.detach().view({-1}).copy_(flat_param.narrow(0, layout().offset[i], layout().numel[i]));
    }
  }
};

ZeroOptimizer::ZeroOptimizer(std::vector<std::pair<std::string, torch::Tensor>> named_params,
                             optim::OptimizerConfig config, Communicator& dp, ZeroOptions options)
    : impl_(std::make_unique<Impl>(std::move(named_params), std::move(config), dp, options)) {
  Impl& m = *impl_;
  m.config.validate();
  if (m.config.max_grad_norm)
    throw InvalidArgument(
        "ZeroOptimizer: config.max_grad_norm would clip by this rank's shard norm; clip by the "
        "global norm (parallel/nn/global_clip.h) and pass the coefficient as step()'s grad_scale");
  if (m.params.empty()) throw InvalidArgument("ZeroOptimizer: no parameters");
  m.dtype = m.params[0].second.scalar_type();
  for (const auto& [name, p] : m.params) {
    if (p.scalar_type() != m.dtype || (m.dtype != torch::kFloat32 && m.dtype != torch::kBFloat16))
      throw InvalidArgument("ZeroOptimizer: parameter '" + name + "' has dtype " + c10::toString(p.scalar_type()) +
                            "; all parameters must share one dtype, float32 or bfloat16 (first: " +
                            c10::toString(m.dtype) + ")");
    // The shard, its optimizer states and the flat buffers live in host memory whatever the parameters' device
    // (ZeRO-Offload's arrangement): a CUDA parameter's gradient is copied to the host, stepped there by the CPU
    // kernel, and the gathered values copied back. Compiled only for CUDA parameters until a GPU run proves it.
    if (!p.is_contiguous())
      throw InvalidArgument("ZeroOptimizer: parameter '" + name + "' must be contiguous");
  }
  m.buckets = std::make_unique<GradBuckets>(m.params, dp, GradBucketOptions{options.bucket_mb, BucketMode::kReduceScatter});
  const FlatLayout& L = m.layout();
  m.shard_param = torch::zeros({L.shard_size()}, torch::TensorOptions().dtype(m.dtype));
  m.flat_param = torch::zeros({L.total}, torch::TensorOptions().dtype(m.dtype));

  // Index bases as a single-rank optimizer over the same parameters has them (cumulative in registration
  // order), plus the piece's offset: every element draws the stochastic-rounding bits it would unsharded.
  std::vector<uint64_t> base(m.params.size(), 0);
  for (size_t i = 1; i < m.params.size(); ++i) base[i] = base[i - 1] + static_cast<uint64_t>(L.numel[i - 1]);
  std::vector<std::pair<std::string, torch::Tensor>> shard_params;
  std::vector<uint64_t> bases;
  for (size_t i : L.order) {
    const auto [b, e] = L.piece(i, dp.rank());
    if (e <= b) continue;
    const int64_t at = L.offset[i] + b - L.shard_begin(dp.rank());
    m.pieces.push_back({i, b, e, at});
    shard_params.emplace_back(m.params[i].first, m.shard_param.narrow(0, at, e - b));
    bases.push_back(base[i] + static_cast<uint64_t>(b));
  }
  m.shard_opt = std::make_unique<optim::Optimizer>(std::move(shard_params), m.config);
  m.shard_opt->set_index_bases(bases);
  sync_from_model();
}

ZeroOptimizer::~ZeroOptimizer() = default;

GradBuckets& ZeroOptimizer::buckets() { return *impl_->buckets; }

void ZeroOptimizer::finish_gradients() {
  if (impl_->grads_ready) return;
  impl_->buckets->finish();
  impl_->grads_ready = true;
}

std::vector<torch::Tensor> ZeroOptimizer::shard_grads() {
  finish_gradients();
  Impl& m = *impl_;
  std::vector<torch::Tensor> out(m.params.size());
  const std::vector<torch::Tensor> pieces = m.piece_grads();
  for (size_t k = 0; k < m.pieces.size(); ++k) out[m.pieces[k].param] = pieces[k];
  return out;
}

optim::StepResult ZeroOptimizer::step(double lr_factor, float grad_scale) {
  Impl& m = *impl_;
  finish_gradients();
  m.grads_ready = false;
  const std::vector<torch::Tensor> grads = m.piece_grads();
  const optim::GradientReport r = optim::check_gradient_tensors(grads);
  // One verdict for the group: a rank that stepped while another skipped would desynchronise the replicas.
  double bad = r.first_nonfinite >= 0 ? 1.0 : 0.0;
  m.dp.all_reduce(std::span<double>(&bad, 1), ReduceOp::kMax);
  if (bad > 0.0) {
    const std::string name = r.first_nonfinite >= 0 ? m.params[m.pieces[r.first_nonfinite].param].first
                                                    : std::string("(a parameter whose shard is on another ") +
                                                          "data-parallel rank)";
    return {false, name};
  }
  const optim::StepResult result = m.shard_opt->step_with_grads(grads, lr_factor, grad_scale);
  if (!result.applied) throw Error("ZeroOptimizer: the shard optimizer skipped a step the group agreed to take");
  m.gather();
  return result;
}

void ZeroOptimizer::sync_from_model() {
  Impl& m = *impl_;
  torch::NoGradGuard no_grad;
  for (const Piece& pc : m.pieces)
    m.shard_param.narrow(0, pc.shard_at, pc.end - pc.begin)
        .copy_(m.params[pc.param].second.detach().reshape({-1}).narrow(0, pc.begin, pc.end - pc.begin));
}

std::map<std::string, torch::Tensor> ZeroOptimizer::state_dict() const { return impl_->shard_opt->state_dict(); }
void ZeroOptimizer::load_state_dict(const std::map<std::string, torch::Tensor>& state) {
  impl_->shard_opt->load_state_dict(state);
}
int64_t ZeroOptimizer::state_bytes() const { return impl_->shard_opt->state_bytes(); }
const FlatLayout& ZeroOptimizer::layout() const { return impl_->layout(); }
const optim::OptimizerConfig& ZeroOptimizer::config() const { return impl_->config; }

// ---- resharding ----------------------------------------------------------------------------------------
namespace {

std::vector<int64_t> numels_of(const ParamShapes& params) {
  std::vector<int64_t> n;
  for (const auto& [name, shape] : params) {
    int64_t k = 1;
    for (int64_t d : shape) k *= d;
    n.push_back(k);
  }
  return n;
}

// The value tensor's shape in a state dict: the parameter's for float codecs, flat for byte codes.
std::vector<int64_t> value_shape(torch::ScalarType dtype, const std::vector<int64_t>& shape, int64_t n) {
  return dtype == torch::kUInt8 ? std::vector<int64_t>{n} : shape;
}

}  // namespace

std::map<std::string, torch::Tensor> gather_zero_state(const std::vector<std::map<std::string, torch::Tensor>>& shards,
                                                       const ParamShapes& params,
                                                       const optim::OptimizerConfig& config) {
  config.validate();
  if (shards.empty()) throw InvalidArgument("gather_zero_state: no shards");
  const int ranks = static_cast<int>(shards.size());
  const FlatLayout L = make_flat_layout(numels_of(params), ranks);
  const optim::StateCodec codec = optim::parse_state_codec(config.state);
  const std::vector<std::string> keys = optim::moment_keys(config);
  std::map<std::string, torch::Tensor> full;
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& [name, shape] = params[i];
    const int64_t n = L.numel[i];
    std::vector<std::pair<int64_t, std::map<std::string, torch::Tensor>>> parts;  // (piece length, fields)
    for (int r = 0; r < ranks; ++r) {
      const auto [b, e] = L.piece(i, r);
      if (e <= b) continue;
      auto f = fields_of(shards[r], name);
      if (f.empty()) continue;
      parts.emplace_back(e - b, std::move(f));
    }
    if (parts.empty()) continue;
    int64_t covered = 0;
    for (const auto& p : parts) covered += p.first;
    if (covered != n)
      throw InvalidArgument("gather_zero_state: the shards hold state for " + std::to_string(covered) + " of the " +
                            std::to_string(n) + " elements of '" + name + "' (a rank's state is missing; pass " +
                            std::to_string(ranks) + " shards from one dp=" + std::to_string(ranks) + " run)");
    full[name + ".step"] = parts[0].second.at("step").clone();
    if (parts[0].second.count("master")) {
      std::vector<torch::Tensor> m;
      for (auto& p : parts) m.push_back(p.second.at("master").reshape({-1}));
      full[name + ".master"] = torch::cat(m).reshape(shape);
    }
    const optim::MomentLayout FL = optim::moment_layout(codec, n);
    for (size_t k = 0; k < keys.size(); ++k) {
      const std::string& key = keys[k];
      const bool is_signed = k == 0;
      bool same = true;
      for (const auto& p : parts) same = same && optim::moment_layout(codec, p.first).codec == FL.codec;
      if (same) {
        std::vector<torch::Tensor> v;
        for (auto& p : parts) v.push_back(p.second.at(key).reshape({-1}));
        full[name + "." + key] = torch::cat(v).reshape(value_shape(state_value_dtype(FL.codec), shape, n));
        for (int s = 0; s < 3; ++s) {
          if (!has_side(FL, s)) continue;
          std::vector<torch::Tensor> side;
          for (auto& p : parts) side.push_back(p.second.at(key + kStateSides[s]));
          full[name + "." + key + kStateSides[s]] = torch::cat(side);
        }
      } else {  // int8 pieces under 4096 elements hold fp32: re-encode the whole tensor
        std::vector<torch::Tensor> x;
        for (auto& p : parts) x.push_back(decode_fields(codec, p.second, p.first, is_signed, key));
        std::map<std::string, torch::Tensor> enc;
        encode_fields(codec, torch::cat(x), is_signed, key, enc);
        for (auto& [f, t] : enc)
          full[name + "." + f] = f == key ? t.reshape(value_shape(state_value_dtype(FL.codec), shape, n)) : t;
      }
    }
  }
  return full;
}

std::map<std::string, torch::Tensor> split_zero_state(const std::map<std::string, torch::Tensor>& full,
                                                      const ParamShapes& params, const optim::OptimizerConfig& config,
                                                      int ranks, int rank) {
  config.validate();
  if (ranks < 1 || rank < 0 || rank >= ranks)
    throw InvalidArgument("split_zero_state: rank " + std::to_string(rank) + " is not in [0, ranks=" +
                          std::to_string(ranks) + ")");
  const FlatLayout L = make_flat_layout(numels_of(params), ranks);
  const optim::StateCodec codec = optim::parse_state_codec(config.state);
  const std::vector<std::string> keys = optim::moment_keys(config);
  std::map<std::string, torch::Tensor> out;
  for (size_t i = 0; i < params.size(); ++i) {
    const std::string& name = params[i].first;
    const int64_t n = L.numel[i];
    const auto [b, e] = L.piece(i, rank);
    if (e <= b) continue;
    auto f = fields_of(full, name);
    if (f.empty()) continue;
    const int64_t len = e - b;
    out[name + ".step"] = f.at("step").clone();
    if (f.count("master")) out[name + ".master"] = f.at("master").reshape({-1}).narrow(0, b, len).clone();
    const optim::MomentLayout FL = optim::moment_layout(codec, n), PL = optim::moment_layout(codec, len);
    for (size_t k = 0; k < keys.size(); ++k) {
      const std::string& key = keys[k];
      if (PL.codec == FL.codec) {
        out[name + "." + key] = f.at(key).reshape({-1}).narrow(0, b, len).clone();
        const int group = optim::codec_group_size(FL.codec);
        for (int s = 0; s < 3; ++s)
          if (has_side(FL, s))
            out[name + "." + key + kStateSides[s]] = f.at(key + kStateSides[s]).narrow(0, b / group, PL.groups).clone();
      } else {
        const torch::Tensor x = decode_fields(codec, f, n, k == 0, key).narrow(0, b, len);
        std::map<std::string, torch::Tensor> enc;
        encode_fields(codec, x, k == 0, key, enc);
        for (auto& [field, t] : enc) out[name + "." + field] = t;
      }
    }
  }
  return out;
}

}  // namespace nibble::parallel::nn
