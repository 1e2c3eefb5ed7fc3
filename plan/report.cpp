// Printed tables (see plan/report.h).
#include "plan/report.h"

#include <cmath>
#include <cstdarg>
#include <cstdio>

namespace nibble::plan {
namespace {

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
  char buffer[512];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(buffer, sizeof buffer, fmt, args);
  va_end(args);
  return buffer;
}

double gib(double bytes) { return bytes / (1024.0 * 1024.0 * 1024.0); }

}  // namespace

std::string layout_table(const std::vector<RankedLayout>& ranked, size_t top) {
  std::string out = format("%4s %4s %3s %5s %4s %3s %3s %-9s %-4s %9s %9s %9s %12s %6s %7s\n", "rank", "tp", "cp", "dp",
                           "pp", "mb", "sp", "recompute", "fits", "mem GiB", "act GiB", "step s", "tokens/s", "MFU",
                           "bubble");
  for (size_t i = 0; i < ranked.size() && i < top; ++i) {
    const RankedLayout& r = ranked[i];
    const Layout& l = r.layout;
    out += format("%4zu %4d %3d %5d %4d %3lld %3s %-9s %-4s %9.1f %9.1f %9.3f %12.0f %5.1f%% %6.1f%%\n", i + 1, l.mesh.tp,
                  l.mesh.cp, l.mesh.dp, l.mesh.pp, static_cast<long long>(l.micro_batch), l.sequence_parallel ? "on" : "-",
                  recompute_name(l.recompute), r.memory.fits() ? "yes" : "NO", gib(r.memory.total()),
                  gib(r.memory.activations), r.time.total, r.time.tokens_per_second, 100.0 * r.time.mfu,
                  100.0 * r.time.bubble / r.time.total);
  }
  return out;
}

std::string memory_breakdown_text(const MemoryBreakdown& m) {
  std::string out = format("memory per rank (pipeline stage %d), GiB:\n", m.stage);
  const std::pair<const char*, double> rows[] = {
      {"parameters (fp32, master)", m.parameters}, {"quantized weight copies", m.weight_copies},
      {"gradients", m.gradients},
      {"optimizer states", m.optimizer_states}, {"activations", m.activations},
      {"logits", m.logits},                    {"communication buffers", m.comm_buffers},
  };
  for (const auto& [name, bytes] : rows) out += format("  %-26s %9.2f\n", name, gib(bytes));
  out += format("  %-26s %9.2f of %.2f usable (%s)\n", "total", gib(m.total()), gib(m.capacity),
                m.fits() ? "fits" : "does NOT fit");
  return out;
}

std::string step_breakdown_text(const StepTime& t) {
  std::string out = "step time, seconds on the critical path:\n";
  const std::pair<const char*, double> rows[] = {
      {"GEMMs (Linear + logits)", t.gemm}, {"attention core", t.attention},
      {"memory-bound kernels", t.memory_bound}, {"rest of layers (calibrated)", t.layer_remainder},
      {"tensor-parallel comm", t.tp_comm},
      {"context-parallel comm", t.cp_comm}, {"pipeline p2p", t.pp_comm},
      {"recomputation", t.recompute},       {"pipeline bubble", t.bubble},
      {"data-parallel comm (exposed)", t.dp_comm}, {"optimizer step", t.optimizer},
  };
  for (const auto& [name, s] : rows) out += format("  %-30s %9.4f\n", name, s);
  out += format("  %-30s %9.4f  (%.0f tokens/s, MFU %.1f%% of the recipe format's dense peak)\n", "total", t.total,
                t.tokens_per_second, 100.0 * t.mfu);
  return out;
}

std::string validation_table(const std::vector<ValidationRow>& rows) {
  std::string out =
      "| source | model | GPUs | tp | pp | dp | batch | recompute | published | predicted | error |\n"
      "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|\n";
  for (const ValidationRow& r : rows) {
    const Layout& l = r.run.layout;
    const char* unit = r.run.is_seconds ? " s" : " TF/s";
    out += format("| %s | %s | %lld | %d | %d | %d | %lld | %s%s | %.2f%s | %.2f%s | %+.1f%% |\n", r.run.source.c_str(),
                  r.run.name.c_str(), static_cast<long long>(l.gpus()), l.mesh.tp, l.mesh.pp, l.mesh.dp,
                  static_cast<long long>(r.run.training.global_batch), recompute_name(l.recompute),
                  l.sequence_parallel ? " + seq-par" : "", r.run.published, unit, r.predicted, unit, 100.0 * r.error);
  }
  double worst = 0, sum = 0;
  for (const ValidationRow& r : rows) worst = std::max(worst, std::abs(r.error)), sum += std::abs(r.error);
  out += format("\nworst |error| %.1f%%, mean |error| %.1f%% over %zu rows\n", 100.0 * worst,
                rows.empty() ? 0.0 : 100.0 * sum / static_cast<double>(rows.size()), rows.size());
  return out;
}

std::string efficiency_text(const Efficiency& e) {
  return format("efficiency: GEMM %.2f of dense peak, HBM %.2f of bandwidth, network %.2f of link bandwidth\n", e.gemm,
                e.hbm, e.network);
}

}  // namespace nibble::plan
