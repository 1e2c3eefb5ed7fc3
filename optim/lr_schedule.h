#pragma once
// Learning-rate schedules as a factor of the base LR: linear warmup, then cosine or linear decay to
// min_ratio, or constant. A pure function of the step, in plain IEEE double arithmetic (portable cosine),
// so a CUDA step that reads its step counter on the device gets the same LR as the CPU. C++17.
#include <cstdint>
#include <string>

#include "optim/portable_math.h"

namespace nibble::optim {

enum class ScheduleKind : uint8_t { kConstant, kCosine, kLinear };

struct LrSchedule {
  ScheduleKind kind = ScheduleKind::kConstant;
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;  // warmup included; decay reaches min_ratio here and stays there
  double min_ratio = 0.0;
};

// Factor for the step with 0-based index `step` (the first update is step 0). Warmup ramps
// (step + 1) / warmup_steps so that the first update already moves.
NIBBLE_HOST_DEVICE double lr_factor(const LrSchedule& s, int64_t step) {
  if (step < s.warmup_steps) return static_cast<double>(step + 1) / static_cast<double>(s.warmup_steps);
  if (s.kind == ScheduleKind::kConstant) return 1.0;
  const int64_t span = s.total_steps - s.warmup_steps;
  double progress = span > 0 ? static_cast<double>(step - s.warmup_steps) / static_cast<double>(span) : 1.0;
  progress = progress > 1.0 ? 1.0 : progress;
  const double shape = s.kind == ScheduleKind::kCosine ? 0.5 * (1.0 + cos_pi_portable(progress)) : 1.0 - progress;
  return s.min_ratio + (1.0 - s.min_ratio) * shape;
}

// Parses "constant", "cosine", "linear" and validates the numbers (InvalidArgument naming the bad one).
LrSchedule make_lr_schedule(const std::string& kind, int64_t warmup_steps, int64_t total_steps, double min_ratio);

}  // namespace nibble::optim
