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
