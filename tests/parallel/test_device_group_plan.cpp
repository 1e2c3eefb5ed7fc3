// Which backend a Mesh group takes for CUDA buffers (parallel/device_group_plan.h): NCCL only where every
// member has a GPU of its own; one-rank groups get no communicator; shared or missing GPUs stage through MPI.
#include <gtest/gtest.h>

#include <vector>

#include "parallel/device_group_plan.h"
#include "parallel/runtime.h"
#include "precision/error.h"

namespace nibble::parallel {
namespace {

TEST(DeviceGroupPlan, OneRankGroupsNeedNoCommunicator) {
  const std::vector<RankPlace> places = {{1, 0}};
  const std::vector<int> members = {0};
  EXPECT_EQ(plan_device_group(members, places).backend, DeviceGroupBackend::kNone);
}

TEST(DeviceGroupPlan, NcclWhenEveryMemberHasItsOwnGpu) {
  // Two nodes of two GPUs: ranks 0, 1 on node 7; ranks 2, 3 on node 9; device = local rank.
  const std::vector<RankPlace> places = {{7, 0}, {7, 1}, {9, 0}, {9, 1}};
  const std::vector<int> tp = {0, 1}, dp = {0, 2}, world = {0, 1, 2, 3};
  EXPECT_EQ(plan_device_group(tp, places).backend, DeviceGroupBackend::kNccl);
  EXPECT_EQ(plan_device_group(dp, places).backend, DeviceGroupBackend::kNccl);  // cuda:0 on two nodes
  const DeviceGroupPlan p = plan_device_group(world, places);
  EXPECT_EQ(p.backend, DeviceGroupBackend::kNccl);
  EXPECT_EQ(p.why, "4 ranks, each on its own GPU");
}

TEST(DeviceGroupPlan, SharedOrMissingGpusStageThroughMpi) {
  // Two ranks on the one GPU of a node (what a 1-GPU check machine runs for dp = 2).
  const std::vector<RankPlace> shared = {{5, 0}, {5, 0}};
  const std::vector<int> both = {0, 1};
  const DeviceGroupPlan s = plan_device_group(both, shared);
  EXPECT_EQ(s.backend, DeviceGroupBackend::kHostStagedMpi);
  EXPECT_NE(s.why.find("world ranks 0 and 1 share cuda:0"), std::string::npos) << s.why;
  const std::vector<RankPlace> cpu = {{5, 0}, {5, -1}};
  const DeviceGroupPlan c = plan_device_group(both, cpu);
  EXPECT_EQ(c.backend, DeviceGroupBackend::kHostStagedMpi);
  EXPECT_NE(c.why.find("world rank 1 has no GPU"), std::string::npos) << c.why;
  EXPECT_STREQ(device_group_backend_name(c.backend), "mpi (host-staged)");
}

TEST(DeviceGroupPlan, PlacesComeFromHostnameAndDevice) {
  EXPECT_EQ(place_of_this_rank("node-a", 1).node, place_of_this_rank("node-a", 0).node);
  EXPECT_NE(place_of_this_rank("node-a", 0).node, place_of_this_rank("node-b", 0).node);
  EXPECT_EQ(place_of_this_rank("node-a", 3).device, 3);
  const std::vector<RankPlace> places = {{1, 0}};
  const std::vector<int> bad = {0, 4};
  EXPECT_THROW(plan_device_group(bad, places), InvalidArgument);
}

TEST(DeviceOfLocalRank, EachLocalRankTakesItsOwnGpuAndWrapsWhenRanksOutnumberThem) {
  EXPECT_EQ(device_for_local_rank(0, 8), 0);
  EXPECT_EQ(device_for_local_rank(7, 8), 7);
  EXPECT_EQ(device_for_local_rank(1, 1), 0);  // two ranks on a one-GPU machine share cuda:0
  EXPECT_EQ(device_for_local_rank(3, 0), -1);  // a CPU rank
  EXPECT_THROW(device_for_local_rank(-1, 2), InvalidArgument);
}

}  // namespace
}  // namespace nibble::parallel
