// Model and training descriptions (see plan/model_spec.h).
#include "plan/model_spec.h"

#include "precision/error.h"

namespace nibble::plan {

const char* recompute_name(Recompute r) {
  switch (r) {
    case Recompute::kNone:
      return "none";
    case Recompute::kSelective:
      return "selective";
    case Recompute::kFull:
      return "full";
  }
  return "?";
}

Recompute parse_recompute(const std::string& name) {
  for (Recompute r : {Recompute::kNone, Recompute::kSelective, Recompute::kFull})
    if (name == recompute_name(r)) return r;
  throw InvalidArgument("recompute '" + name + "' is invalid: must be none, selective or full");
}

int64_t ModelSpec::layer_params() const {
  const int64_t h = hidden, kv_dim = kv() * head_dim();
  return h * (h + 2 * kv_dim) + h * h + mlp_matrices() * h * ffn_hidden();
}

int64_t ModelSpec::total_params() const {
  return layers * layer_params() + embedding_params() * (tied_embeddings ? 1 : 2);
}

void ModelSpec::validate() const {
  const auto need = [](bool ok, const std::string& key, int64_t v, const std::string& rule) {
    if (!ok) throw InvalidArgument("model." + key + " = " + std::to_string(v) + " is invalid: " + rule);
  };
  need(layers >= 1, "layers", layers, "must be >= 1");
  need(hidden >= 1, "hidden", hidden, "must be >= 1");
  need(heads >= 1 && hidden % heads == 0, "heads", heads, "must be >= 1 and divide hidden");
  need(kv_heads >= 0 && (kv_heads == 0 || heads % kv_heads == 0), "kv_heads", kv_heads, "must divide heads (0 = heads)");
  need(ffn >= 0, "ffn_hidden", ffn, "must be >= 0 (0 = 8/3 hidden)");
  need(vocab >= 1, "vocab", vocab, "must be >= 1");
  need(seq_len >= 1, "seq_len", seq_len, "must be >= 1");
  need(activation_bytes == 2 || activation_bytes == 4, "activation_bytes", activation_bytes, "must be 2 or 4");
}

void TrainingSpec::validate() const {
  if (global_batch < 1) throw InvalidArgument("train.global_batch must be >= 1");
  if (micro_batch < 1) throw InvalidArgument("train.micro_batch must be >= 1");
  if (optimizer != "adamw" && optimizer != "sgd")
    throw InvalidArgument("optim.optimizer = '" + optimizer + "' is invalid: must be adamw or sgd");
  if (virtual_stages < 1) throw InvalidArgument("parallel.virtual_stages must be >= 1");
  if (gradient_bytes != 2 && gradient_bytes != 4) throw InvalidArgument("gradient bytes must be 2 or 4");
}

}  // namespace nibble::plan
