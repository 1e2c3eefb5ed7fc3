#include "launch/device_mesh.h"

#include <cstdint>
#include <span>
#include <vector>

#include "parallel/runtime.h"
#include "precision/error.h"
#if NIBBLE_WITH_NCCL
#include "parallel/nccl_communicator.h"
#endif

namespace nibble::launch {

void agree_on_device(bool cuda) {
  parallel::Communicator& world = parallel::world();
  if (world.size() == 1) return;
  std::vector<int32_t> all(static_cast<size_t>(world.size()));
  const int32_t mine = cuda ? 1 : 0;
  world.all_gather<int32_t>(std::span<const int32_t>(&mine, 1), std::span<int32_t>(all));
  int first_cuda = -1, first_cpu = -1;
  for (int r = 0; r < world.size(); ++r) {
    int& first = all[static_cast<size_t>(r)] != 0 ? first_cuda : first_cpu;
    if (first < 0) first = r;
  }
  if (first_cuda >= 0 && first_cpu >= 0)
    throw Error("ranks disagree on the training device: world rank " + std::to_string(first_cuda) +
                " trains on a GPU and world rank " + std::to_string(first_cpu) + " on the CPU (train.device = "
                "\"auto\" picks per rank); give every rank a GPU, or set train.device = \"cpu\"");
}

std::unique_ptr<parallel::Mesh> make_training_mesh(const parallel::MeshShape& shape, bool cuda) {
  const parallel::CommOptions options{parallel::info().deadline, parallel::info().liveness_probe};
#if NIBBLE_WITH_NCCL
  if (cuda) return std::make_unique<parallel::Mesh>(shape, parallel::ModelShape{}, options, parallel::nccl_groups());
#else
  (void)cuda;  // without NCCL every group stages CUDA tensors through host memory (parallel/nn/host_staging.h)
#endif
  return std::make_unique<parallel::Mesh>(shape, parallel::ModelShape{}, options);
}

std::string describe_device_groups(const parallel::Mesh& mesh) {
  std::string out;
  for (parallel::GroupKind kind : parallel::kAllGroupKinds) {
    const parallel::Communicator& g = mesh.host_group(kind);
    if (g.size() == 1) continue;
    const parallel::DeviceGroupPlan& plan = mesh.device_plan(kind);
    // (kNone for a group of several ranks: the Mesh was built without device groups, i.e. without NCCL.)
    const std::string backend = plan.backend == parallel::DeviceGroupBackend::kNone
                                    ? std::string("mpi (host-staged: this build has no NCCL)")
                                    : std::string(parallel::device_group_backend_name(plan.backend)) +
                                          (plan.why.empty() ? "" : ": " + plan.why);
    out += (out.empty() ? "" : ", ") + std::string(parallel::group_name(kind)) + " " + backend;
  }
  return out;
}

}  // namespace nibble::launch
