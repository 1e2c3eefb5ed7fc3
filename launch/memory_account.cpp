#include "launch/memory_account.h"

#include <algorithm>
#include <cstdio>

namespace nibble::launch {
namespace {

int64_t bytes_of(const torch::Tensor& t) { return t.defined() ? static_cast<int64_t>(t.nbytes()) : 0; }

std::string mib(int64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2f", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return text;
}

}  // namespace

MemoryAccount measure_memory(const core::model::Gpt& model, const TrainOptimizer& optimizer, int64_t saved_bytes,
                             int64_t microbatches, int64_t peak, const std::string& peak_source) {
  MemoryAccount a;
  for (const auto& p : model.params()) {  // (a tied copy on the last pp stage is memory of its own: counted)
    a.parameters += bytes_of(p.tensor);
    a.gradients += bytes_of(p.tensor.grad());
  }
  for (const auto& [key, t] : optimizer.state_dict()) a.optimizer_states += bytes_of(t);
  for (const auto& s : model.linear_states()) {
    if (s->w_row) a.weight_caches += s->w_row->bytes();
    if (s->w_col && s->w_col != s->w_row) a.weight_caches += s->w_col->bytes();
  }
  a.saved_per_microbatch = microbatches > 0 ? saved_bytes / microbatches : 0;
  a.persistent = a.parameters + a.gradients + a.optimizer_states + a.weight_caches;
  a.peak = peak;
  a.peak_source = peak_source;
  a.transient_at_peak = std::max<int64_t>(0, peak - a.persistent);
  return a;
}

std::string describe(const MemoryAccount& a) {
  return "parameters " + mib(a.parameters) + " MiB + gradients " + mib(a.gradients) + " + optimizer states " +
         mib(a.optimizer_states) + " + weight caches " + mib(a.weight_caches) + " = persistent " +
         mib(a.persistent) + "; peak " + mib(a.peak) + " MiB (" + a.peak_source + "), of which transient " +
         mib(a.transient_at_peak) + " (nibble layers save " + mib(a.saved_per_microbatch) + " per micro-batch)";
}

nlohmann::ordered_json to_json(const MemoryAccount& a) {
  return {{"parameters", a.parameters},
          {"gradients", a.gradients},
          {"optimizer_states", a.optimizer_states},
          {"weight_caches", a.weight_caches},
          {"persistent", a.persistent},
          {"saved_per_microbatch", a.saved_per_microbatch},
          {"transient_at_peak", a.transient_at_peak},
          {"peak", a.peak},
          {"peak_source", a.peak_source}};
}

}  // namespace nibble::launch
