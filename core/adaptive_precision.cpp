#include "core/adaptive_precision.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/precision_ladder.h"
#include "precision/error.h"

namespace nibble::core {

AdaptivePrecision::AdaptivePrecision(const std::vector<std::pair<std::string, Recipe>>& linears,
                                     const std::vector<std::string>& ladder, double snr_db, int64_t patience,
                                     bool reproducible_sums)
    : snr_db_(snr_db), patience_(patience) {
  if (patience < 1) throw InvalidArgument("AdaptivePrecision: patience " + std::to_string(patience) + " must be >= 1");
  for (const auto& [name, start] : linears) linears_.push_back({name, linear_ladder(start, ladder, reproducible_sums)});
}

PrecisionSwitch AdaptivePrecision::raise(Linear& l, std::string reason) {
  PrecisionSwitch s{l.name, l.recipe().name, l.rungs[l.rung + 1].name, std::move(reason)};
  ++l.rung;
  l.below = 0;
  return s;
}

std::vector<PrecisionSwitch> AdaptivePrecision::measured(const std::map<std::string, double>& worst_snr_db) {
  std::vector<PrecisionSwitch> out;
  for (Linear& l : linears_) {
    const auto it = worst_snr_db.find(l.name);
    if (it == worst_snr_db.end() || l.top()) continue;
    if (!(it->second < snr_db_)) {
      l.below = 0;
      continue;
    }
    if (++l.below < patience_) continue;
    char reason[128];
    std::snprintf(reason, sizeof reason, "worst SNR < %.2f dB in %lld measurement(s) in a row, latest %.2f dB", snr_db_,
                  static_cast<long long>(l.below), it->second);
    out.push_back(raise(l, reason));
  }
  return out;
}

std::vector<PrecisionSwitch> AdaptivePrecision::nonfinite(const std::vector<bool>& flags) {
  if (flags.size() != linears_.size())
    throw InvalidArgument("AdaptivePrecision::nonfinite: " + std::to_string(flags.size()) + " flags for " +
                          std::to_string(linears_.size()) + " Linears");
  for (size_t i = flags.size(); i-- > 0;) {
    if (!flags[i]) continue;
    if (linears_[i].top()) return {};  // nothing left to raise: the step-skipping policy is all that remains
    return {raise(linears_[i], "non-finite weight gradient")};
  }
  return {};
}

std::string probe_unit(const std::string& linear) {
  const size_t dot = linear.rfind('.');
  return dot == std::string::npos ? linear : linear.substr(0, dot);
}

std::vector<std::vector<size_t>> AdaptivePrecision::units() const {
  std::vector<std::vector<size_t>> out;
  std::string current;
  for (size_t i = 0; i < linears_.size(); ++i) {
    const std::string unit = probe_unit(linears_[i].name);
    if (out.empty() || unit != current) out.emplace_back();
    current = unit;
    out.back().push_back(i);
  }
  return out;
}

bool AdaptivePrecision::climbable(const std::vector<size_t>& unit) const {
  for (size_t i : unit)
    if (!linears_.at(i).top()) return true;
  return false;
}

std::vector<PrecisionSwitch> AdaptivePrecision::probed(const std::vector<double>& gain_pct, double min_gain_pct) {
  const auto groups = units();
  if (gain_pct.size() != groups.size())
    throw InvalidArgument("AdaptivePrecision::probed: " + std::to_string(gain_pct.size()) + " gains for " +
                          std::to_string(groups.size()) + " units");
  // The largest gain among the probed units; the first one on a tie, so every rank picks the same.
  size_t best = groups.size();
  for (size_t u = 0; u < groups.size(); ++u)
    if (climbable(groups[u]) && !std::isnan(gain_pct[u]) && (best == groups.size() || gain_pct[u] > gain_pct[best]))
      best = u;
  const bool counts = best < groups.size() && gain_pct[best] >= min_gain_pct;
  for (size_t u = 0; u < groups.size(); ++u)
    if (u != best || !counts)
      for (size_t i : groups[u]) linears_[i].below = 0;
  if (!counts) return {};
  int64_t count = 0;
  for (size_t i : groups[best]) count = std::max(count, linears_[i].below);
  ++count;
  for (size_t i : groups[best]) linears_[i].below = count;
  if (count < patience_) return {};
  char reason[200];
  std::snprintf(reason, sizeof reason,
                "loss probe: raising %s lowered the loss the most, by >= %.3f%% in %lld probe(s) in a row, latest "
                "%.3f%%",
                probe_unit(linears_[groups[best].front()].name).c_str(), min_gain_pct, static_cast<long long>(count),
                gain_pct[best]);
  std::vector<PrecisionSwitch> out;
  for (size_t i : groups[best])
    if (!linears_[i].top()) out.push_back(raise(linears_[i], reason));
  for (size_t i : groups[best]) linears_[i].below = 0;
  return out;
}

std::vector<int64_t> AdaptivePrecision::state() const {
  std::vector<int64_t> out;
  for (const Linear& l : linears_) {
    out.push_back(static_cast<int64_t>(l.rung));
    out.push_back(l.below);
  }
  return out;
}

void AdaptivePrecision::set_state(const std::vector<int64_t>& state) {
  if (state.size() != 2 * linears_.size())
    throw InvalidArgument("AdaptivePrecision: a state of " + std::to_string(state.size()) + " values for " +
                          std::to_string(linears_.size()) + " Linears (2 each)");
  for (size_t i = 0; i < linears_.size(); ++i) {
    const int64_t rung = state[2 * i], below = state[2 * i + 1];
    if (rung < 0 || rung >= static_cast<int64_t>(linears_[i].rungs.size()) || below < 0)
      throw InvalidArgument("AdaptivePrecision: " + linears_[i].name + " at rung " + std::to_string(rung) + " (count " +
                            std::to_string(below) + ") is not on its ladder of " +
                            std::to_string(linears_[i].rungs.size()) + " rung(s)");
  }
  for (size_t i = 0; i < linears_.size(); ++i) {
    linears_[i].rung = static_cast<size_t>(state[2 * i]);
    linears_[i].below = state[2 * i + 1];
  }
}

int64_t AdaptivePrecision::four_bit_count() const {
  int64_t n = 0;
  for (const Linear& l : linears_) n += four_bit(l.recipe()) ? 1 : 0;
  return n;
}

}  // namespace nibble::core
