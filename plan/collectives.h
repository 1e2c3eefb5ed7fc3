#pragma once
// Alpha-beta cost of the collectives a training step runs: ring all-reduce, all-gather, reduce-scatter and
// point-to-point, over NVLink when the group fits in a node and over InfiniBand when it spans nodes (Mesh puts
// tp fastest, so a tp group is consecutive ranks; see parallel/mesh.h).
#include "plan/cluster.h"

namespace nibble::plan {

// The link a group of `size` ranks spaced `stride` world ranks apart runs over: intra-node iff the group's
// span (stride * size) fits in one node of gpus_per_node consecutive ranks.
LinkSpec link_for_group(const ClusterSpec& cluster, int stride, int size);

// Seconds for `bytes` = the full buffer (all-reduce: the reduced tensor; all-gather: the gathered output;
// reduce-scatter: the input), over n ranks. Ring algorithm: every rank sends (n-1)/n of it (twice for
// all-reduce) and pays n-1 (2(n-1)) latencies. `efficiency`: the achieved fraction of link bandwidth.
// A link with a reduce rate (LinkSpec::reduce_gbps) adds the summation of (n-1)/n of the buffer to all-reduce
// and reduce-scatter.
double all_reduce_seconds(double bytes, int n, const LinkSpec& link, double efficiency);
double all_gather_seconds(double bytes, int n, const LinkSpec& link, double efficiency);
double reduce_scatter_seconds(double bytes, int n, const LinkSpec& link, double efficiency);
double p2p_seconds(double bytes, const LinkSpec& link, double efficiency);

}  // namespace nibble::plan
