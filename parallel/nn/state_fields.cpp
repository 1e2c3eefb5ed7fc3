#include "parallel/nn/state_fields.h"

#include "optim/fused_step.h"

namespace nibble::parallel::nn {
namespace {

optim::MomentView moment_view(std::map<std::string, torch::Tensor>& fields, const std::string& key,
                              const optim::MomentLayout& L) {
  optim::MomentView v;
  v.values = fields.at(key).data_ptr();
  if (L.has_scale) v.scale = fields.at(key + "_scale").data_ptr<float>();
  if (L.has_expansion) v.expansion = fields.at(key + "_k").data_ptr<float>();
  if (L.has_centre) v.centre = fields.at(key + "_centre").data_ptr<float>();
  return v;
}

}  // namespace

bool has_side(const optim::MomentLayout& L, int s) {
  return s == 0 ? L.has_scale : s == 1 ? L.has_expansion : L.has_centre;
}

torch::ScalarType state_value_dtype(optim::StateCodec c) {
  return c == optim::StateCodec::kFP32 ? torch::kFloat32 : c == optim::StateCodec::kBF16 ? torch::kBFloat16
                                                                                          : torch::kUInt8;
}

void encode_fields(optim::StateCodec codec, const torch::Tensor& x, bool is_signed, const std::string& key,
                   std::map<std::string, torch::Tensor>& out) {
  const int64_t n = x.numel();
  const optim::MomentLayout L = optim::moment_layout(codec, n);
  out[key] = torch::empty({n}, torch::TensorOptions().dtype(state_value_dtype(L.codec)));
  for (int s = 0; s < 3; ++s)
    if (has_side(L, s)) out[key + kStateSides[s]] = torch::empty({L.groups}, torch::kFloat32);
  const torch::Tensor xc = x.to(torch::kFloat32).contiguous();
  optim::encode_state(codec, xc.data_ptr<float>(), n, moment_view(out, key, L), is_signed);
}

torch::Tensor decode_fields(optim::StateCodec codec, std::map<std::string, torch::Tensor>& fields, int64_t n,
                            bool is_signed, const std::string& key) {
  torch::Tensor out = torch::empty({n}, torch::kFloat32);
  optim::decode_state(codec, moment_view(fields, key, optim::moment_layout(codec, n)), n, is_signed,
                      out.data_ptr<float>());
  return out;
}

std::map<std::string, torch::Tensor> fields_of(const std::map<std::string, torch::Tensor>& dict,
                                               const std::string& name) {
  std::map<std::string, torch::Tensor> f;
  const std::string prefix = name + ".";
  for (auto it = dict.lower_bound(prefix); it != dict.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it) {
    const std::string field = it->first.substr(prefix.size());
    if (field.find('.') == std::string::npos) f[field] = it->second.contiguous();
  }
  return f;
}

}  // namespace nibble::parallel::nn
