#include "parallel/device_group_plan.h"

#include <map>
#include <utility>

#include "precision/error.h"

namespace nibble::parallel {

const char* device_group_backend_name(DeviceGroupBackend backend) {
  switch (backend) {
    case DeviceGroupBackend::kNone: return "none";
    case DeviceGroupBackend::kNccl: return "nccl";
    case DeviceGroupBackend::kHostStagedMpi: return "mpi (host-staged)";
  }
  return "?";
}

DeviceGroupPlan plan_device_group(std::span<const int> members, std::span<const RankPlace> places) {
  for (int r : members)
    if (r < 0 || static_cast<size_t>(r) >= places.size())
      throw InvalidArgument("plan_device_group: member world rank " + std::to_string(r) + " has no place (" +
                            std::to_string(places.size()) + " ranks known)");
  if (members.size() <= 1) return {DeviceGroupBackend::kNone, "one rank: nothing to communicate"};
  std::map<std::pair<uint64_t, int>, int> owner;  // (node, device) -> the first member on it
  for (int r : members) {
    const RankPlace& p = places[static_cast<size_t>(r)];
    if (p.device < 0)
      return {DeviceGroupBackend::kHostStagedMpi, "world rank " + std::to_string(r) + " has no GPU"};
    const auto [it, fresh] = owner.emplace(std::make_pair(p.node, p.device), r);
    if (!fresh)
      return {DeviceGroupBackend::kHostStagedMpi,
              "world ranks " + std::to_string(it->second) + " and " + std::to_string(r) + " share cuda:" +
                  std::to_string(p.device) + " on one node (NCCL needs a GPU per rank)"};
  }
  return {DeviceGroupBackend::kNccl, std::to_string(members.size()) + " ranks, each on its own GPU"};
}

RankPlace place_of_this_rank(const std::string& hostname, int device) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : hostname) h = (h ^ c) * 1099511628211ull;
  return {h, device};
}

}  // namespace nibble::parallel
