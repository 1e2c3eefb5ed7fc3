#pragma once
// The Mesh a training job communicates over, for its device. On a GPU, each group whose members all have a GPU
// of their own moves CUDA tensors over NCCL (parallel/device_group_plan.h; host buffers of that group still go
// over MPI), and every other group stages CUDA tensors through host memory over MPI. On the CPU, MPI only.
// The NCCL branch is compiled only until a GPU run proves it (README "GPU status").
#include <memory>
#include <string>

#include "parallel/mesh.h"

namespace nibble::launch {

// Collective over the world: every rank must train on the same kind of device, because one operation moves
// host buffers or device buffers on every member of a group, never a mix. Throws nibble::Error naming a rank
// of each kind when they differ (e.g. train.device = "auto" on a job where only some ranks see a GPU).
void agree_on_device(bool cuda);

std::unique_ptr<parallel::Mesh> make_training_mesh(const parallel::MeshShape& shape, bool cuda);

// For the start-up line: each group of more than one rank with the backend its CUDA tensors take and why,
// e.g. "tp nccl (2 ranks, each on its own GPU), dp mpi (host-staged: world ranks 0 and 2 share GPU 0 ...)";
// "" when no group has more than one rank.
std::string describe_device_groups(const parallel::Mesh& mesh);

}  // namespace nibble::launch
