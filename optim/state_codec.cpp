#include "optim/state_codec.h"

#include "optim/dre.h"
#include "optim/dynamic_map.h"
#include "precision/error.h"

namespace nibble::optim {

int codec_group_size(StateCodec codec) {
  switch (codec) {
    case StateCodec::kFP8:
    case StateCodec::kFP8Plain:
      return kDreGroupSize;
    case StateCodec::kInt8:
      return kInt8BlockSize;
    case StateCodec::kFP32:
    case StateCodec::kBF16:
      break;
  }
  return 0;
}

MomentLayout moment_layout(StateCodec codec, int64_t numel) {
  if (numel < 0) throw InvalidArgument("optimizer state: numel must be >= 0, got " + std::to_string(numel));
  MomentLayout L;
  L.codec = effective_codec(codec, numel);
  L.numel = numel;
  const int group = codec_group_size(L.codec);
  L.groups = group ? (numel + group - 1) / group : 0;
  switch (L.codec) {
    case StateCodec::kFP32:
      L.value_bytes = 4 * numel;
      break;
    case StateCodec::kBF16:
      L.value_bytes = 2 * numel;
      break;
    case StateCodec::kFP8:
      L.value_bytes = numel;
      L.has_scale = L.has_expansion = L.has_centre = true;
      break;
    case StateCodec::kFP8Plain:
    case StateCodec::kInt8:
      L.value_bytes = numel;
      L.has_scale = true;
      break;
  }
  return L;
}

StateCodec parse_state_codec(const std::string& name) {
  if (name == "fp32") return StateCodec::kFP32;
  if (name == "bf16") return StateCodec::kBF16;
  if (name == "fp8") return StateCodec::kFP8;
  if (name == "fp8_plain") return StateCodec::kFP8Plain;
  if (name == "int8") return StateCodec::kInt8;
  throw InvalidArgument("unknown optimizer state codec '" + name + "'; valid: fp32, bf16, fp8, fp8_plain, int8");
}

std::string state_codec_name(StateCodec codec) {
  switch (codec) {
    case StateCodec::kFP32:
      return "fp32";
    case StateCodec::kBF16:
      return "bf16";
    case StateCodec::kFP8:
      return "fp8";
    case StateCodec::kFP8Plain:
      return "fp8_plain";
    case StateCodec::kInt8:
      return "int8";
  }
  return "?";
}

}  // namespace nibble::optim
