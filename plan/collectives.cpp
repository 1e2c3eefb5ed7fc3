// Alpha-beta collective costs (see plan/collectives.h).
#include "plan/collectives.h"

namespace nibble::plan {
namespace {

double beta_seconds(double bytes, const LinkSpec& link, double efficiency) {
  return bytes / (link.bandwidth_gbps * 1e9 * efficiency);
}

// Summing the (n-1)/n of the buffer a rank receives, where the link's reduction is not free.
double reduce_seconds(double bytes, int n, const LinkSpec& link) {
  return link.reduce_gbps > 0 ? (n - 1.0) / n * bytes / (link.reduce_gbps * 1e9) : 0.0;
}

}  // namespace

LinkSpec link_for_group(const ClusterSpec& cluster, int stride, int size) {
  const long long span = static_cast<long long>(stride) * size;
  return span <= cluster.gpus_per_node ? cluster.intra_node : cluster.inter_node;
}

double all_reduce_seconds(double bytes, int n, const LinkSpec& link, double efficiency) {
  if (n <= 1 || bytes <= 0) return 0;
  const double steps = 2.0 * (n - 1);
  return steps / n * beta_seconds(bytes, link, efficiency) + steps * link.latency_us * 1e-6 +
         reduce_seconds(bytes, n, link);
}

double all_gather_seconds(double bytes, int n, const LinkSpec& link, double efficiency) {
  if (n <= 1 || bytes <= 0) return 0;
  const double steps = n - 1.0;
  return steps / n * beta_seconds(bytes, link, efficiency) + steps * link.latency_us * 1e-6;
}

double reduce_scatter_seconds(double bytes, int n, const LinkSpec& link, double efficiency) {
  if (n <= 1 || bytes <= 0) return 0;
  return all_gather_seconds(bytes, n, link, efficiency) + reduce_seconds(bytes, n, link);  // reversed, and summed
}

double p2p_seconds(double bytes, const LinkSpec& link, double efficiency) {
  if (bytes <= 0) return 0;
  return beta_seconds(bytes, link, efficiency) + link.latency_us * 1e-6;
}

}  // namespace nibble::plan
