#pragma once
// TE's DelayedScaling recipe state for one tensor (docs/QUANTIZATION.md "Delayed scaling"): an amax history
// and the scale derived from it. The scale used at step t comes from amaxes of steps before t.
#include <cstdint>
#include <string>
#include <vector>

#include "precision/format.h"

namespace nibble::precision {

enum class AmaxAlgo : uint8_t { kMax, kMostRecent };

class DelayedScaling {
 public:
  DelayedScaling(int history_len = 1024, AmaxAlgo algo = AmaxAlgo::kMax, int margin = 0,
                 Format fmt = formats::kE4M3);

  // Folds this step's amax of the tensor into the staging slot history[0] (max).
  void record(float amax);
  // Computes the new scale from the history (before rolling), keeps the old one if the amax is 0 or not
  // finite, then rolls the history and clears the staging slot. Returns the scale now in force.
  float update();

  float scale() const { return scale_; }
  const std::vector<float>& history() const { return history_; }
  // Restores a saved state (checkpoints); the history length must match.
  void restore(const std::vector<float>& history, float scale);

  int margin() const { return margin_; }
  AmaxAlgo algo() const { return algo_; }
  const Format& format() const { return fmt_; }

 private:
  std::vector<float> history_;
  AmaxAlgo algo_;
  int margin_;
  Format fmt_;
  float scale_ = 1.0f;
};

AmaxAlgo parse_amax_algo(const std::string& name);

}  // namespace nibble::precision
