#pragma once
// Rank bootstrap: one process per rank, started by mpirun or srun. init() initialises MPI (unless someone else
// already did), reads rank / size / local rank, binds this rank to a GPU when there is one, and creates the
// world Communicator. Idempotent; shutdown() finalises MPI once (only if init() initialised it).
#include <chrono>
#include <cstdint>
#include <string>

#include "parallel/communicator.h"

namespace nibble::parallel {

// What the launcher's environment says, read before (and independently of) MPI. -1 = not set.
struct LaunchEnv {
  std::string launcher = "none";  // "openmpi" (OMPI_COMM_WORLD_*), "pmi" (PMI_* / PMIX_RANK), "slurm" (SLURM_*)
  int rank = -1, size = -1, local_rank = -1;  // from the launcher above
  int ompi_rank = -1, ompi_size = -1, ompi_local_rank = -1;
  int pmi_rank = -1, pmi_size = -1;
  int slurm_procid = -1, slurm_ntasks = -1, slurm_localid = -1;
};
// Reads OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK}, PMI_{RANK,SIZE} (or PMIX_RANK), SLURM_{PROCID,NTASKS,LOCALID};
// the launcher is the first of Open MPI, PMI, Slurm that is present (mpirun inside a Slurm allocation sets
// both; the Open MPI values are then the ones MPI uses). Malformed values throw InvalidArgument.
LaunchEnv read_launch_env();

struct InitOptions {
  std::chrono::milliseconds deadline = kDefaultDeadline;  // default deadline of the world and mesh groups
  bool liveness_probe = false;  // CommOptions::liveness_probe for the world and mesh groups (nibble-train: on)
  bool select_device = true;                              // cudaSetDevice(local_rank % devices) when built with CUDA
};

struct RuntimeInfo {
  int rank = 0, world_size = 1;
  int local_rank = 0, local_size = 1;  // among the ranks sharing this node (MPI_Comm_split_type SHARED)
  int device = -1;                     // the CUDA device bound to this rank, -1 without one
  int device_count = 0;                // CUDA devices visible to this rank
  // (nibble_parallel_host, the Python module's variant, leaves the device to torch: device stays -1 here.)
  int thread_level = 0;   // MPI thread support provided
  bool owns_mpi = false;  // init() called MPI_Init, so shutdown() calls MPI_Finalize
  std::string hostname;
  LaunchEnv env;
  std::chrono::milliseconds deadline = kDefaultDeadline;
  bool liveness_probe = false;
};

// Initialises the runtime (first call) or returns the existing state (later calls; their options are ignored).
// Throws nibble::Error when the launcher's environment contradicts MPI (e.g. srun without --mpi=pmix starts
// N separate one-rank jobs), and after shutdown() (MPI cannot be initialised twice in a process).
const RuntimeInfo& init(const InitOptions& options = {});
bool is_initialized();
const RuntimeInfo& info();  // throws unless initialised
// The CUDA device of the rank with this local rank among `device_count` visible devices: local rank i takes
// device i, wrapping when ranks outnumber devices (they then share GPUs, which NCCL refuses: those groups stay on
// MPI, parallel/device_group_plan.h). -1 without devices. What init() binds with cudaSetDevice.
int device_for_local_rank(int local_rank, int device_count);

// The CPU cores this rank may use, at least 1: its affinity set when the launcher bound it to part of the
// machine (mpirun --bind-to core|socket, srun --cpu-bind, taskset), else the cores it can see shared evenly by
// the ranks on this node (info().local_size; 1 before init()). What `train.threads = 0` gives each rank.
int cores_per_rank();
// The world group: an MpiCommunicator over a duplicate of MPI_COMM_WORLD named "world".
Communicator& world();
// Frees the world group and finalises MPI (if init() initialised it). Safe to call more than once. Groups
// (Mesh) still alive afterwards must not be used; their destructors are harmless.
void shutdown();
// Prints `why` to stderr and ends every rank of the job (MPI_Abort): the answer to a timeout in a trainer.
[[noreturn]] void abort_job(const std::string& why, int code = 1);

}  // namespace nibble::parallel
