#include "optim/lr_schedule.h"

#include "precision/error.h"

namespace nibble::optim {

LrSchedule make_lr_schedule(const std::string& kind, int64_t warmup_steps, int64_t total_steps, double min_ratio) {
  LrSchedule s;
  if (kind == "constant") {
    s.kind = ScheduleKind::kConstant;
  } else if (kind == "cosine") {
    s.kind = ScheduleKind::kCosine;
  } else if (kind == "linear") {
    s.kind = ScheduleKind::kLinear;
  } else {
    throw InvalidArgument("unknown LR schedule '" + kind + "'; valid: constant, cosine, linear");
  }
  if (warmup_steps < 0)
    throw InvalidArgument("LR schedule: warmup_steps must be >= 0, got " + std::to_string(warmup_steps));
  if (s.kind != ScheduleKind::kConstant && total_steps < warmup_steps)
    throw InvalidArgument("LR schedule: total_steps (" + std::to_string(total_steps) + ") must be >= warmup_steps (" +
                          std::to_string(warmup_steps) + ") for '" + kind + "'");
  if (!(min_ratio >= 0.0 && min_ratio <= 1.0))
    throw InvalidArgument("LR schedule: min_ratio must be in [0, 1], got " + std::to_string(min_ratio));
  s.warmup_steps = warmup_steps;
  s.total_steps = total_steps;
  s.min_ratio = min_ratio;
  return s;
}

}  // namespace nibble::optim
