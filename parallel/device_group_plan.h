#pragma once
// Which backend each Mesh group uses for CUDA buffers, decided from where its members run (host-side, no CUDA:
// unit-tested on any machine). NCCL needs every member on a GPU of its own: two ranks on one device cannot join
// one NCCL communicator. A one-rank group needs no communicator at all (cuda-review.md §4: six NCCL
// communicators per rank, size-1 groups included, each with its own buffers and stream).
//   kNone            a group of one rank: nothing to move
//   kNccl            every member on its own GPU
//   kHostStagedMpi   a member without a GPU, or two members on one GPU: the MPI group, staging CUDA buffers
//                    through host memory (parallel/nn/host_staging.h)
#include <cstdint>
#include <span>
#include <string>

namespace nibble::parallel {

// Where a rank runs: its node (a hash of the hostname) and its CUDA device (-1: none).
struct RankPlace {
  uint64_t node = 0;
  int device = -1;
};

enum class DeviceGroupBackend : uint8_t { kNone, kNccl, kHostStagedMpi };
const char* device_group_backend_name(DeviceGroupBackend backend);  // "none", "nccl", "mpi (host-staged)"

struct DeviceGroupPlan {
  DeviceGroupBackend backend = DeviceGroupBackend::kNone;
  std::string why;  // for the start-up line and errors: "2 ranks, each on its own GPU"
};

// `members`: the group's world ranks; `places`: every world rank's place (indexed by world rank). Throws
// InvalidArgument when a member has no place.
DeviceGroupPlan plan_device_group(std::span<const int> members, std::span<const RankPlace> places);

// This process's place: FNV-1a of the hostname and `device`.
RankPlace place_of_this_rank(const std::string& hostname, int device);

}  // namespace nibble::parallel
