// Cluster descriptions from TOML (see plan/cluster.h).
#include "plan/cluster.h"

#include <fstream>
#include <sstream>
#include <toml++/toml.h>

#include "precision/error.h"

#ifndef NIBBLE_PLAN_CLUSTERS_DIR
#error "NIBBLE_PLAN_CLUSTERS_DIR must name plan/clusters (set by plan/CMakeLists.txt)"
#endif

namespace nibble::plan {
namespace {

double positive(const toml::table& t, const std::string& key, const std::string& source, bool zero_ok) {
  const auto node = t.at_path(key);
  const std::optional<double> v = node.value<double>();
  if (!v) throw InvalidArgument(source + ": " + key + " is missing or not a number");
  if (*v < 0 || (!zero_ok && *v == 0))
    throw InvalidArgument(source + ": " + key + " = " + std::to_string(*v) + " must be " +
                          (zero_ok ? ">= 0 (0: the GPU lacks the format, or nothing to charge)" : "> 0"));
  return *v;
}

// A [cpu] value given per recipe format slot: a table (bf16 required, a missing slot takes bf16's) or one
// number for every slot; absent: zeros.
std::array<double, kAllGemmFormats.size()> per_slot(const toml::table& t, const std::string& key,
                                                    const std::string& source, bool zero_ok) {
  std::array<double, kAllGemmFormats.size()> slots{};
  if (t.at_path(key).is_table()) {
    const double bf16 = positive(t, key + ".bf16", source, zero_ok);
    for (GemmFormat f : kAllGemmFormats) {
      const std::string slot_key = key + "." + gemm_format_name(f);
      slots[static_cast<size_t>(f)] = t.at_path(slot_key) ? positive(t, slot_key, source, zero_ok) : bf16;
    }
  } else if (t.at_path(key)) {
    slots.fill(positive(t, key, source, zero_ok));
  }
  return slots;
}

LinkSpec link(const toml::table& t, const std::string& table, const std::string& source) {
  LinkSpec l{positive(t, table + ".bandwidth_gbps", source, false), positive(t, table + ".latency_us", source, true)};
  if (t.at_path(table + ".reduce_gbps")) l.reduce_gbps = positive(t, table + ".reduce_gbps", source, false);
  return l;
}

}  // namespace

const char* gemm_format_name(GemmFormat format) {
  switch (format) {
    case GemmFormat::kBF16:
      return "bf16";
    case GemmFormat::kFP8:
      return "fp8";
    case GemmFormat::kMXFP8:
      return "mxfp8";
    case GemmFormat::kNVFP4:
      return "nvfp4";
    case GemmFormat::kMXFP4:
      return "mxfp4";
  }
  return "?";
}

ClusterSpec parse_cluster(const std::string& toml_text, const std::string& source) {
  toml::table t;
  try {
    t = toml::parse(toml_text, source);
  } catch (const toml::parse_error& e) {
    throw InvalidArgument(source + ": not valid TOML: " + std::string(e.description()));
  }
  ClusterSpec c;
  c.name = t["name"].value_or(std::string());
  if (c.name.empty()) throw InvalidArgument(source + ": name is missing");
  c.description = t["description"].value_or(std::string());
  const std::optional<int64_t> gpn = t["gpus_per_node"].value<int64_t>();
  if (!gpn || *gpn < 1) throw InvalidArgument(source + ": gpus_per_node must be an integer >= 1");
  c.gpus_per_node = static_cast<int>(*gpn);
  c.cuda_sm = static_cast<int>(t["cuda_sm"].value_or(int64_t{0}));
  if (t.contains("cores_per_node")) c.cores_per_node = positive(t, "cores_per_node", source, true);
  if (t.contains("cpu")) {
    if (!t["cpu"].is_table()) throw InvalidArgument(source + ": cpu must be a table ([cpu])");
    if (t.at_path("cpu.attention_tflops")) c.attention_tflops = positive(t, "cpu.attention_tflops", source, false);
    c.elementwise_gbps = per_slot(t, "cpu.elementwise_gbps", source, false);
    c.layer_remainder_ns_per_token = per_slot(t, "cpu.layer_remainder_ns_per_token", source, true);
  }
  for (GemmFormat f : kAllGemmFormats)
    c.dense_tflops[static_cast<size_t>(f)] =
        positive(t, std::string("dense_tflops.") + gemm_format_name(f), source, f != GemmFormat::kBF16);
  c.hbm_gb = positive(t, "memory.capacity_gb", source, false);
  c.hbm_gbps = positive(t, "memory.bandwidth_gbps", source, false);
  c.intra_node = link(t, "intra_node", source);
  c.inter_node = link(t, "inter_node", source);
  return c;
}

std::string shipped_clusters_dir() { return NIBBLE_PLAN_CLUSTERS_DIR; }

ClusterSpec load_cluster(const std::string& name_or_path) {
  const bool is_path = name_or_path.find('/') != std::string::npos ||
                       (name_or_path.size() > 5 && name_or_path.substr(name_or_path.size() - 5) == ".toml");
  const std::string path = is_path ? name_or_path : shipped_clusters_dir() + "/" + name_or_path + ".toml";
  std::ifstream in(path);
  if (!in)
    throw InvalidArgument("cluster '" + name_or_path + "': cannot read " + path +
                          "; shipped: a100, h100, h200, b200, gb200 (or give a path to a .toml)");
  std::stringstream text;
  text << in.rdbuf();
  return parse_cluster(text.str(), path);
}

}  // namespace nibble::plan
