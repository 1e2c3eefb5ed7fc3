#pragma once
// The memory account nibble-train prints after the first two steps of a run (the first in which the optimizer's
// states exist from the start) and writes to metrics.jsonl: what this rank's bytes are spent on, each category
// counted from the tensors that hold it, and the peak measured at the allocator (torch's CUDA caching allocator on
// a GPU, core/cpu_allocation_tracker.h on the CPU) -- not RSS.
//   parameters          the model's FP32 parameters (nibble's master weights: there is no second copy)
//   gradients           their .grad tensors
//   optimizer_states    the optimizer's state tensors (moments, scales; ZeRO-1: this rank's shard), per codec
//   weight_caches       the Linears' cached quantized weight copies (core/linear.h)
//   persistent          the sum of the four above: live through the whole step
//   transient_at_peak   peak - persistent: activations in flight, what backward keeps (of which nibble's layers'
//                       part is saved_per_microbatch), torch's own saved tensors (attention, embedding, loss),
//                       workspaces and communication buffers
//   saved_per_microbatch  what nibble's autograd functions save for backward over one micro-batch's forward
//                       (quantized operands, compressed norm/SwiGLU inputs, masks; core/saved_for_backward_meter.h)
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "core/model/gpt.h"
#include "launch/train_optimizer.h"

namespace nibble::launch {

struct MemoryAccount {
  int64_t parameters = 0, gradients = 0, optimizer_states = 0, weight_caches = 0, saved_per_microbatch = 0;
  int64_t persistent = 0;
  int64_t peak = 0;               // allocator peak over the measured steps
  int64_t transient_at_peak = 0;  // peak - persistent (never below 0)
  std::string peak_source;  // "torch CPU allocations" or "torch CUDA allocator"
};

// `saved_bytes`: the saved-for-backward meter's growth over the step's forwards; `microbatches` how many ran on
// this rank; `peak` and `peak_source` from the allocator.
MemoryAccount measure_memory(const core::model::Gpt& model, const TrainOptimizer& optimizer, int64_t saved_bytes,
                             int64_t microbatches, int64_t peak, const std::string& peak_source);

// "parameters 0.44 MiB + gradients 0.44 + optimizer states 0.88 + weight caches 0.00 = persistent 1.76; peak 2.90
// MiB (torch CPU allocations), of which transient 1.14 (nibble layers save 0.61 per micro-batch)"
std::string describe(const MemoryAccount& account);
nlohmann::ordered_json to_json(const MemoryAccount& account);  // bytes

}  // namespace nibble::launch
