#pragma once
// The decisions of model.precision_policy = "adaptive" (AdaPT's and adaptive bit-switching's idea: spend bits where
// the low-precision copy is measurably poor), as a state machine over the model's quantized Linears. Pure: no
// torch, no communication -- launch/precision_policy.h feeds it figures every rank holds the same, makes every
// rank hold rank 0's state, applies it to the model and records it in checkpoints.
//
// Each Linear sits on a rung of its ladder (core/precision_ladder.h) and counts the measurements in a row whose
// worst SNR was below the threshold:
//   - a measurement below model.adaptive_snr_db adds one; at model.adaptive_patience the Linear goes up one rung
//     and the count restarts (the next rung is judged by its own figures); one at or above it resets the count;
//   - a step whose gradients are non-finite raises the last Linear in forward order whose weight gradient is
//     non-finite: backward reaches it first, so the non-finite values began there or in what follows it (the
//     loss), not in a Linear before it that only received them. Raising every flagged Linear would undo the
//     policy on one bad step, since a non-finite dy spreads to every Linear below.
// A Linear on its top rung stays there.
//
// With model.adaptive_measure = "loss_probe" the statistics do not decide; a loss probe does (what the loss cares
// about, where SNR only says how far a copy is from its source: docs/ADAPTIVE.md measured the difference). The
// units are the transformer blocks (and the LM head): the probe evaluates fixed batches with the model as it is
// and with one unit's Linears one rung up, for every unit, and hands over each unit's gain in % of the loss.
//   - the unit with the largest gain adds one to its count if that gain reaches model.adaptive_probe_gain (%),
//     and every other unit's count restarts; at model.adaptive_patience its Linears go up one rung and its count
//     restarts. No unit reaching the threshold restarts every count. One unit at a time: raising one changes
//     what raising another would gain.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/recipe.h"

namespace nibble::core {

struct PrecisionSwitch {
  std::string linear, from, to;  // recipe names
  std::string reason;            // for the log line and the metrics record
};

// The loss probe's unit a Linear belongs to: "layers.3.qkv" -> "layers.3"; a name without a dot ("lm_head") is
// its own unit.
std::string probe_unit(const std::string& linear);

class AdaptivePrecision {
 public:
  struct Linear {
    std::string name;
    std::vector<Recipe> rungs;  // rungs[0]: the configured recipe
    size_t rung = 0;
    int64_t below = 0;  // measurements in a row below the threshold
    const Recipe& recipe() const { return rungs[rung]; }
    bool top() const { return rung + 1 == rungs.size(); }
  };

  // `linears`: every Linear of the whole model in forward order with its configured recipe; `ladder`:
  // parse_precision_ladder's names.
  AdaptivePrecision(const std::vector<std::pair<std::string, Recipe>>& linears, const std::vector<std::string>& ladder,
                    double snr_db, int64_t patience, bool reproducible_sums);

  // A statistics step: the worst SNR (dB) of each measured Linear's quantized copies. A Linear without an entry
  // (nothing quantized, or its copies equal their sources exactly) keeps its count.
  std::vector<PrecisionSwitch> measured(const std::map<std::string, double>& worst_snr_db);
  // A skipped step: whose weight gradients were non-finite, one flag per Linear in forward order.
  std::vector<PrecisionSwitch> nonfinite(const std::vector<bool>& flags);

  // The loss probe's units: each transformer block's Linears ("layers.<i>.*"), the LM head alone, as indices
  // into linears() in forward order; and whether one of a unit's Linears is below its top rung.
  std::vector<std::vector<size_t>> units() const;
  bool climbable(const std::vector<size_t>& unit) const;
  // A loss probe's outcome: each unit's gain (units() order) in % of the loss, NaN for one not probed (not
  // climbable); the decision above, with `min_gain_pct` the threshold.
  std::vector<PrecisionSwitch> probed(const std::vector<double>& gain_pct, double min_gain_pct);

  const std::vector<Linear>& linears() const { return linears_; }
  // (rung, below) of every Linear in order: what the ranks agree on and a checkpoint records. set_state checks
  // the size and that each rung is on its Linear's ladder.
  std::vector<int64_t> state() const;
  void set_state(const std::vector<int64_t>& state);

  // How many Linears sit on a 4-bit recipe now (core/precision_ladder.h four_bit).
  int64_t four_bit_count() const;

 private:
  PrecisionSwitch raise(Linear& l, std::string reason);
  std::vector<Linear> linears_;
  double snr_db_;
  int64_t patience_;
};

}  // namespace nibble::core
