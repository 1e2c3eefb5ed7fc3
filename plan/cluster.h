#pragma once
// A cluster as the planner sees it: per-GPU dense tensor-core throughput for each GEMM format, HBM capacity
// and bandwidth, and two link classes (inside a node: NVLink; between nodes: InfiniBand) as alpha-beta pairs.
// Descriptions live in plan/clusters/*.toml, every value with the public spec sheet it came from; nothing
// here is fitted (the achieved fractions of these peaks are plan/efficiency.h's, stated once).
#include <array>
#include <cstdint>
#include <string>

namespace nibble::plan {

// The tensor-core formats a GEMM can run in. A format a GPU lacks has throughput 0 there.
enum class GemmFormat : uint8_t { kBF16, kFP8, kMXFP8, kNVFP4, kMXFP4 };
inline constexpr std::array<GemmFormat, 5> kAllGemmFormats = {GemmFormat::kBF16, GemmFormat::kFP8, GemmFormat::kMXFP8,
                                                              GemmFormat::kNVFP4, GemmFormat::kMXFP4};
const char* gemm_format_name(GemmFormat format);  // "bf16", "fp8", "mxfp8", "nvfp4", "mxfp4"

struct LinkSpec {
  double bandwidth_gbps = 0;  // GB/s per GPU, one direction (what a ring collective's every step moves)
  double latency_us = 0;      // per message step
  // A calibrated CPU machine: GB/s at which a rank sums what it receives in an all-reduce or reduce-scatter
  // (MPI reduces in software, on the cores that train), over the (n-1)/n of the buffer each rank reduces. 0:
  // free, inside the link time (NCCL reduces on the GPU at line rate).
  double reduce_gbps = 0;
};

struct ClusterSpec {
  std::string name;
  std::string description;
  int gpus_per_node = 1;  // GPUs that share the fast link (an NVL72 rack counts as one node)
  int cuda_sm = 0;        // compute capability major*10+minor: which GEMM path nibble takes (core/gemm_path.h)
  std::array<double, kAllGemmFormats.size()> dense_tflops{};  // indexed by GemmFormat
  double hbm_gb = 0;
  double hbm_gbps = 0;
  LinkSpec intra_node;
  LinkSpec inter_node;
  // A CPU machine (a calibrated description, plan/calibrate.py): the cores its ranks share, as measured: the
  // throughput of one single-threaded process per core running together, in units of one running alone (a
  // shared machine gives fewer than it has). 0 for GPUs, where every rank owns its device. Rates above are then
  // one core's (one rank, one thread), and a job of n ranks on a node of c cores gives each rank min(1, c / n)
  // of that: with more ranks than cores they time-share.
  double cores_per_node = 0;
  // A calibrated CPU machine's [cpu] table (plan/calibrate.py), 0 where absent (GPUs): the attention core's rate
  // as nibble runs it (torch SDPA on FP32 activations, over the planner's FLOP count), charged instead of the BF16
  // GEMM rate; and per recipe format slot (the slot of the recipe's fprop, as dense_tflops), a layer's element-wise
  // work as nibble runs it in that recipe (norms, SwiGLU, residual adds in FP32, COAT's compression where the
  // recipe has it), in bytes per second over the bf16 recipe's count of that term's bytes (so one count, and the
  // recipe's extra work is in the rate), charged instead of memory.bandwidth_gbps for that term. `elementwise_gbps
  // = x` sets every slot; a table sets each (bf16 required, a missing slot takes bf16's).
  double attention_tflops = 0;
  std::array<double, kAllGemmFormats.size()> elementwise_gbps{};
  // Per recipe format slot (as elementwise_gbps): what a layer of a one-rank nibble-train step costs beyond the
  // terms above -- RoPE, the QKV permutes and copies, autograd's per-op work, allocation -- in nanoseconds per
  // token of one micro-batch (forward + backward, one thread), measured by plan/calibrate.py as a 1-rank step
  // minus the planner's own prediction of it. Charged per layer on a rank's tokens over tp (0: not charged).
  std::array<double, kAllGemmFormats.size()> layer_remainder_ns_per_token{};

  // The fraction of the per-core (per-GPU) rates that one rank of a `ranks`-rank job gets.
  double rank_share(int64_t ranks) const {
    if (cores_per_node <= 0) return 1.0;
    const int64_t on_node = ranks < gpus_per_node ? ranks : gpus_per_node;
    return static_cast<double>(on_node) <= cores_per_node ? 1.0 : cores_per_node / static_cast<double>(on_node);
  }

  double peak_flops(GemmFormat format) const { return dense_tflops[static_cast<size_t>(format)] * 1e12; }
};

// Parses a cluster description (the format of plan/clusters/*.toml). `source` names it in errors. Throws
// InvalidArgument naming the key, its value and what is valid.
ClusterSpec parse_cluster(const std::string& toml_text, const std::string& source);

// `name_or_path`: a shipped cluster ("a100", "h100", "h200", "b200", "gb200": plan/clusters/<name>.toml) or a
// path to a .toml file of the same format.
ClusterSpec load_cluster(const std::string& name_or_path);
std::string shipped_clusters_dir();

}  // namespace nibble::plan
