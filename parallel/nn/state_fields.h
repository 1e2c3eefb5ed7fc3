#pragma once
// One parameter's optimizer state as a state dict holds it (optim::Optimizer::state_dict: "<param>.<field>"):
// "step", "master" (bfloat16 parameters), and per moment key (optim::moment_keys: "m", "v", ...) its values
// plus the codec's side arrays "<key>_scale", "<key>_k", "<key>_centre". Decoding a moment to FP32 and encoding
// FP32 into a codec's fields are what resharding does where the saved codes cannot be carried over as they are
// (ZeRO-1's gather/split, zero_optimizer.h; the tp reshard, tp_state_reshard.h).
#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "optim/state_codec.h"

namespace nibble::parallel::nn {

inline constexpr const char* kStateSides[] = {"_scale", "_k", "_centre"};
// Whether a moment of layout L has side array s (0: scale, 1: k, 2: centre).
bool has_side(const optim::MomentLayout& L, int s);
// The dtype of a moment's values: float (fp32), bfloat16 (bf16) or uint8 codes.
torch::ScalarType state_value_dtype(optim::StateCodec effective);

// The fields of parameter `name` in `dict` ("<name>.<field>" -> "<field>", contiguous), not those of a parameter
// whose name extends it ("<name>.x.<field>").
std::map<std::string, torch::Tensor> fields_of(const std::map<std::string, torch::Tensor>& dict,
                                               const std::string& name);

// Moment `key`'s fields (values flat, side arrays) for the effective codec of x.numel() elements, encoded from x.
// `is_signed`: the first moment (signed); the second is not.
void encode_fields(optim::StateCodec codec, const torch::Tensor& x, bool is_signed, const std::string& key,
                   std::map<std::string, torch::Tensor>& out);
// Moment `key` of `n` elements decoded from `fields` to a flat float32 tensor.
torch::Tensor decode_fields(optim::StateCodec codec, std::map<std::string, torch::Tensor>& fields, int64_t n,
                            bool is_signed, const std::string& key);

}  // namespace nibble::parallel::nn
