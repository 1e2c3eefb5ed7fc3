#include "launch/precision_policy.h"

#include <cmath>
#include <cstdio>
#include <limits>
#include <span>

#include "core/precision_ladder.h"
#include "launch/log.h"
#include "parallel/runtime.h"
#include "precision/error.h"

namespace nibble::launch {
namespace {

// The Linears in forward order (core/model/gpt.cpp's names, as QuantizationStatsLog lists them) with their
// configured recipes and weight elements.
struct LinearSpec {
  std::string name;
  core::Recipe recipe;
  int64_t weights;
};

std::vector<LinearSpec> model_linears(const core::model::GptConfig& c) {
  std::vector<LinearSpec> out;
  const int64_t h = c.hidden, f = c.ffn();
  for (int64_t i = 0; i < c.layers; ++i) {
    const core::Recipe r = core::model::layer_recipe(c, i);
    const std::string base = "layers." + std::to_string(i) + ".";
    for (const auto& [linear, weights] : {std::pair{"qkv", 3 * h * h}, std::pair{"out", h * h},
                                          std::pair{"gate", f * h}, std::pair{"up", f * h}, std::pair{"down", h * f}})
      out.push_back({base + linear, r, weights});
  }
  core::Recipe head = core::recipe_preset(c.lm_head_recipe);
  head.reproducible_sums = c.reproducible_sums;
  out.push_back({"lm_head", head, c.vocab * h});
  return out;
}

std::string fmt_gain(double pct) {
  char text[32];
  std::snprintf(text, sizeof text, " %+.3f", pct);
  return text;
}

std::string key(const std::string& linear, const char* field) {
  return "precision_policy." + linear + "." + field;
}

}  // namespace

double worst_snr_db(const nlohmann::ordered_json& operands) {
  double worst = std::numeric_limits<double>::infinity();
  for (const auto& [role, figures] : operands.items())
    if (figures.contains("snr_db") && figures["snr_db"].is_number())  // null: the copy equals its source
      worst = std::min(worst, figures["snr_db"].get<double>());
  return worst;
}

PrecisionPolicy::PrecisionPolicy(const core::model::GptConfig& config, bool lead) : lead_(lead) {
  if (config.precision_policy != "adaptive") return;
  std::vector<std::pair<std::string, core::Recipe>> linears;
  for (const LinearSpec& l : model_linears(config)) {
    index_[l.name] = linears.size();
    linears.emplace_back(l.name, l.recipe);
    weights_.push_back(l.weights);
  }
  decisions_ = std::make_unique<core::AdaptivePrecision>(linears, core::parse_precision_ladder(config.adaptive_ladder),
                                                         config.adaptive_snr_db, config.adaptive_patience,
                                                         config.reproducible_sums);
  applied_.assign(linears.size(), 0);
  if (config.adaptive_measure == "loss_probe") probe_gain_pct_ = config.adaptive_probe_gain;
  if (!lead_) return;
  int64_t climbing = 0;
  for (const auto& l : decisions_->linears()) climbing += l.top() ? 0 : 1;
  char measure[256];
  if (probe_gain_pct_)
    std::snprintf(measure, sizeof measure,
                  "a block at a time, after %lld loss probe(s) in a row (every train.stats_every steps, %lld "
                  "batch(es)) in which raising it lowered the loss the most, by >= %.3f%%",
                  static_cast<long long>(config.adaptive_patience),
                  static_cast<long long>(config.adaptive_probe_batches), *probe_gain_pct_);
  else
    std::snprintf(measure, sizeof measure,
                  "after %lld measurement(s) in a row (every train.stats_every steps) with a worst SNR < %.2f dB",
                  static_cast<long long>(config.adaptive_patience), config.adaptive_snr_db);
  std::printf(
      "precision policy: adaptive -- %lld of %zu Linears can climb their ladder (their recipe, then the "
      "more precise of \"%s\"), one rung %s, or on a non-finite weight gradient\n",
      static_cast<long long>(climbing), linears.size(), config.adaptive_ladder.c_str(), measure);
  std::fflush(stdout);
}

void PrecisionPolicy::measured(const std::map<std::string, nlohmann::ordered_json>& figures) {
  if (!decisions_ || probes()) return;  // under the loss probe the statistics are only logged
  std::map<std::string, double> worst;
  for (const auto& [linear, operands] : figures)
    if (const double w = worst_snr_db(operands); std::isfinite(w)) worst[linear] = w;
  for (auto& s : decisions_->measured(worst)) pending_.push_back(std::move(s));
  observed_ = true;
}

void PrecisionPolicy::nonfinite(const core::model::Gpt& model) {
  if (!decisions_) return;
  const auto& linears = decisions_->linears();
  // This rank's weight gradients of the Linears it holds (a tied LM head's weight is embedding.weight).
  std::map<std::string, const core::model::ParamInfo*> params;
  for (const auto& p : model.params()) params[p.name] = &p;
  std::vector<int32_t> flags(linears.size(), 0);
  for (size_t i = 0; i < linears.size(); ++i) {
    const std::string weight = linears[i].name == "lm_head" && model.config().tie_embeddings
                                   ? "embedding.weight"
                                   : linears[i].name + ".weight";
    const auto it = params.find(weight);
    if (it == params.end()) continue;
    const torch::Tensor g = it->second->tensor.grad();
    flags[i] = g.defined() && !torch::isfinite(g).all().item<bool>() ? 1 : 0;
  }
  parallel::world().all_reduce<int32_t>(std::span<int32_t>(flags), parallel::ReduceOp::kMax);
  std::vector<bool> any(flags.begin(), flags.end());
  for (auto& s : decisions_->nonfinite(any)) pending_.push_back(std::move(s));
  observed_ = true;
}

nlohmann::ordered_json PrecisionPolicy::probe(core::model::Gpt& model, int64_t step,
                                              const std::function<double()>& loss) {
  // Every evaluation starts from the states as they are now and the last one leaves them so: the probe's
  // forwards fill weight caches, may record delayed-scaling amaxes or draw rounding counters, and must not
  // change the run. They are not statistics either.
  std::vector<std::pair<core::LinearState*, core::LinearState::Snapshot>> saved;
  for (const auto& s : model.linear_states()) saved.emplace_back(s.get(), s->snapshot());
  auto evaluate = [&] {
    for (auto& [s, snapshot] : saved) s->collect_stats = false;
    const double l = loss();
    for (auto& [s, snapshot] : saved) s->restore(snapshot);
    return l;
  };
  const double base = evaluate();
  const auto& linears = decisions_->linears();
  const auto units = decisions_->units();
  std::vector<double> gains(units.size(), std::numeric_limits<double>::quiet_NaN());
  nlohmann::ordered_json record_gains = nlohmann::ordered_json::object();
  for (size_t u = 0; std::isfinite(base) && base > 0 && u < units.size(); ++u) {
    if (!decisions_->climbable(units[u])) continue;
    const std::string unit = core::probe_unit(linears[units[u].front()].name);
    for (auto& [s, snapshot] : saved) {
      const auto& l = linears[index_.at(s->name)];
      if (core::probe_unit(l.name) == unit && !l.top()) s->set_recipe(l.rungs[l.rung + 1]);
    }
    gains[u] = 100.0 * (base - evaluate()) / base;
    record_gains[unit] = std::isfinite(gains[u]) ? nlohmann::ordered_json(gains[u]) : nlohmann::ordered_json();
  }
  for (auto& s : decisions_->probed(gains, *probe_gain_pct_)) pending_.push_back(std::move(s));
  observed_ = true;
  if (lead_) {
    std::string line;
    for (const auto& [unit, gain] : record_gains.items())
      line += " " + unit + (gain.is_number() ? fmt_gain(gain.get<double>()) : std::string(" n/a"));
    std::printf("loss probe after step %lld: loss %.4f; raising one rung gains (%% of it):%s\n",
                static_cast<long long>(step), base, line.c_str());
    std::fflush(stdout);
  }
  return {{"step", step}, {"loss_probe", {{"loss", base}, {"gain_pct", record_gains}}}};
}

std::vector<nlohmann::ordered_json> PrecisionPolicy::end_step(core::model::Gpt& model, QuantizationStatsLog& stats,
                                                              int64_t step) {
  if (!decisions_ || !observed_) return {};
  observed_ = false;
  std::vector<int64_t> agreed = decisions_->state();
  parallel::world().broadcast<int64_t>(std::span<int64_t>(agreed), 0);
  if (agreed != decisions_->state()) {
    // Not expected (every rank decided from the same figures); rank 0's state wins, and the log says so.
    log_warning("precision policy: this rank's decisions at step " + std::to_string(step) +
                " differ from rank 0's; taking rank 0's");
    decisions_->set_state(agreed);
  }
  std::vector<nlohmann::ordered_json> records;
  const auto& linears = decisions_->linears();
  for (size_t i = 0; i < linears.size(); ++i) {
    if (linears[i].rung == applied_[i]) continue;
    std::string reason = "rank 0's decision";
    for (const auto& s : pending_)
      if (s.linear == linears[i].name) reason = s.reason;
    const std::string from = linears[i].rungs[applied_[i]].name, to = linears[i].recipe().name;
    stats.set_recipe(linears[i].name, to);
    records.push_back(
        {{"step", step},
         {"precision_switch", {{"linear", linears[i].name}, {"from", from}, {"to", to}, {"reason", reason}}}});
    if (lead_)
      std::printf("precision: after step %lld, %s %s -> %s (%s)\n", static_cast<long long>(step),
                  linears[i].name.c_str(), from.c_str(), to.c_str(), reason.c_str());
  }
  pending_.clear();
  apply(model);
  if (lead_ && !records.empty()) std::fflush(stdout);
  return records;
}

void PrecisionPolicy::apply(core::model::Gpt& model) {
  const auto& linears = decisions_->linears();
  for (const auto& s : model.linear_states()) {
    const size_t i = index_.at(s->name);
    if (linears[i].rung != applied_[i]) s->set_recipe(linears[i].recipe());
  }
  for (size_t i = 0; i < linears.size(); ++i) applied_[i] = linears[i].rung;
}

void PrecisionPolicy::append(std::vector<std::pair<std::string, torch::Tensor>>& out) const {
  if (!decisions_) return;
  for (const auto& l : decisions_->linears()) {
    out.emplace_back(key(l.name, "rung"), torch::tensor({static_cast<int64_t>(l.rung)}, torch::kInt64));
    out.emplace_back(key(l.name, "below"), torch::tensor({l.below}, torch::kInt64));
    const std::string& name = l.recipe().name;
    out.emplace_back(key(l.name, "recipe"),
                     torch::tensor(std::vector<uint8_t>(name.begin(), name.end()), torch::kUInt8));
  }
}

void PrecisionPolicy::restore(const std::map<std::string, torch::Tensor>& tensors, const std::string& source,
                              core::model::Gpt& model) {
  const bool recorded = tensors.count(key("lm_head", "rung")) > 0;
  if (!decisions_) {
    if (recorded && lead_)
      log_warning("checkpoint '" + source +
                  "' records adaptive precision rungs; model.precision_policy = "
                  "\"fixed\" starts every Linear at its configured recipe instead");
    return;
  }
  if (!recorded) {
    if (lead_)
      std::printf(
          "precision policy: checkpoint %s records no rungs (written with model.precision_policy = "
          "\"fixed\"); every Linear starts at its configured recipe\n",
          source.c_str());
    return;
  }
  std::vector<int64_t> state;
  for (const auto& l : decisions_->linears()) {
    auto need = [&](const char* field) {
      const auto it = tensors.find(key(l.name, field));
      if (it == tensors.end())
        throw Error("checkpoint '" + source + "' has no entry '" + key(l.name, field) +
                    "': it was written by a different model");
      return it->second.contiguous();
    };
    const int64_t rung = need("rung").item<int64_t>();
    const torch::Tensor recipe = need("recipe");
    const std::string saved(reinterpret_cast<const char*>(recipe.data_ptr<uint8_t>()),
                            static_cast<size_t>(recipe.numel()));
    // The index means the same recipe only under the same ladder: a changed model.adaptive_ladder or starting
    // recipe must not silently put a Linear on another recipe.
    if (rung < 0 || rung >= static_cast<int64_t>(l.rungs.size()) || l.rungs[static_cast<size_t>(rung)].name != saved)
      throw Error("checkpoint '" + source + "' has " + l.name + " on rung " + std::to_string(rung) + " (" + saved +
                  "), which is not that rung of its ladder in this job (model.recipe, model.layer_recipes, "
                  "model.adaptive_ladder must be those of the run that wrote it)");
    state.push_back(rung);
    state.push_back(need("below").item<int64_t>());
  }
  decisions_->set_state(state);
  apply(model);
  if (lead_) {
    int64_t raised = 0;
    for (const auto& l : decisions_->linears()) raised += l.rung > 0 ? 1 : 0;
    std::printf("precision policy: resumed with %lld of %zu Linears raised\n", static_cast<long long>(raised),
                decisions_->linears().size());
  }
}

void PrecisionPolicy::label(QuantizationStatsLog& stats) const {
  if (!decisions_) return;
  for (const auto& l : decisions_->linears()) stats.set_recipe(l.name, l.recipe().name);
}

double PrecisionPolicy::four_bit_weight_share() const {
  const auto& linears = decisions_->linears();
  int64_t weights = 0, four_bit_weights = 0;
  for (size_t i = 0; i < linears.size(); ++i) {
    weights += weights_[i];
    if (core::four_bit(linears[i].recipe())) four_bit_weights += weights_[i];
  }
  return static_cast<double>(four_bit_weights) / static_cast<double>(weights);
}

std::string PrecisionPolicy::summary() const {
  if (!decisions_) return "";
  std::string raised;
  for (const auto& l : decisions_->linears())
    if (l.rung > 0) raised += (raised.empty() ? "" : ", ") + l.name + " " + l.recipe().name;
  char text[256];
  std::snprintf(text, sizeof text, "precision at the end: %lld of %zu Linears in 4 bits (%.1f%% of their weights)",
                static_cast<long long>(decisions_->four_bit_count()), decisions_->linears().size(),
                100.0 * four_bit_weight_share());
  return std::string(text) + "; raised: " + (raised.empty() ? "none" : raised);
}

nlohmann::ordered_json PrecisionPolicy::summary_record(int64_t step) const {
  nlohmann::ordered_json rungs = nlohmann::ordered_json::object();
  for (const auto& l : decisions_->linears()) rungs[l.name] = l.recipe().name;
  return {{"step", step},
          {"precision",
           {{"four_bit", decisions_->four_bit_count()},
            {"linears", decisions_->linears().size()},
            {"four_bit_weight_share", four_bit_weight_share()},
            {"recipes", rungs}}}};
}

}  // namespace nibble::launch
