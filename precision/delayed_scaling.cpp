#include "precision/delayed_scaling.h"

#include <algorithm>
#include <cfloat>
#include <cmath>

#include "precision/error.h"
#include "precision/format_names.h"

namespace nibble::precision {

DelayedScaling::DelayedScaling(int history_len, AmaxAlgo algo, int margin, Format fmt)
    : algo_(algo), margin_(margin), fmt_(fmt) {
  if (history_len < 1)
    throw InvalidArgument("DelayedScaling: history_len must be >= 1, got " + std::to_string(history_len));
  if (margin < 0) throw InvalidArgument("DelayedScaling: margin must be >= 0, got " + std::to_string(margin));
  if (fmt != formats::kE4M3 && fmt != formats::kE5M2)
    throw InvalidArgument("DelayedScaling: format must be e4m3 or e5m2, got " + format_name(fmt));
  history_.assign(static_cast<size_t>(history_len), 0.0f);
}

void DelayedScaling::record(float amax) {
  if (std::isnan(amax)) throw InvalidArgument("DelayedScaling.record: amax is NaN");
  history_[0] = std::max(history_[0], amax);
}

float DelayedScaling::update() {
  const float amax = algo_ == AmaxAlgo::kMax ? *std::max_element(history_.begin(), history_.end()) : history_[0];
  const float scaled_max = max_finite(fmt_) * std::ldexp(1.0f, -margin_);
  if (std::isfinite(amax) && amax > 0.0f) {
    float s = scaled_max / amax;
    if (std::isinf(s)) s = FLT_MAX;
    scale_ = s;
  }
  std::rotate(history_.begin(), history_.begin() + 1, history_.end());
  history_[0] = 0.0f;
  return scale_;
}

void DelayedScaling::restore(const std::vector<float>& history, float scale) {
  if (history.size() != history_.size())
    throw InvalidArgument("DelayedScaling.restore: history length " + std::to_string(history.size()) +
                          " does not match " + std::to_string(history_.size()));
  if (!(scale > 0.0f) || !std::isfinite(scale))
    throw InvalidArgument("DelayedScaling.restore: scale must be finite and positive");
  history_ = history;
  scale_ = scale;
}

AmaxAlgo parse_amax_algo(const std::string& name) {
  if (name == "max") return AmaxAlgo::kMax;
  if (name == "most_recent") return AmaxAlgo::kMostRecent;
  throw InvalidArgument("unknown amax algorithm '" + name + "'; valid: 'max', 'most_recent'");
}

}  // namespace nibble::precision
