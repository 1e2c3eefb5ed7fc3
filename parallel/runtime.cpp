// Rank bootstrap (see parallel/runtime.h).
#include "parallel/runtime.h"

#include <mpi.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>

#include "parallel/mpi_communicator.h"
#include "precision/error.h"

#if NIBBLE_PARALLEL_CUDA
#include <cuda_runtime_api.h>
#endif

namespace nibble::parallel {
namespace {

struct State {
  std::mutex mutex;
  bool initialized = false;
  bool finalized = false;
  RuntimeInfo info;
  std::unique_ptr<MpiCommunicator> world;
};

State& state() {
  static State s;
  return s;
}

int env_int(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return -1;
  errno = 0;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (errno != 0 || *end != '\0' || x < 0 || x > INT_MAX)
    throw InvalidArgument(std::string("nibble.parallel: environment variable ") + name + "='" + v +
                          "' is not a non-negative integer");
  return static_cast<int>(x);
}

void shutdown_at_exit() {
  try {
    shutdown();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nibble.parallel: shutdown at exit failed: %s\n", e.what());
  }
}

[[noreturn]] void launch_mismatch(const LaunchEnv& env, const char* what, int env_value, int mpi_value) {
  std::string hint;
  if (env.launcher == "slurm")
    hint = " Under Slurm, launch with `srun --mpi=pmix` (or pmi2) so MPI sees the job's ranks, or use mpirun.";
  else
    hint = " Launch every rank with the same mpirun (one MPI job), not as separate programs.";
  throw Error("nibble.parallel.init: the launcher (" + env.launcher + ") says " + what + " " +
              std::to_string(env_value) + " but MPI reports " + std::to_string(mpi_value) +
              ": each process probably became its own MPI job." + hint);
}

}  // namespace

LaunchEnv read_launch_env() {
  LaunchEnv e;
  e.ompi_rank = env_int("OMPI_COMM_WORLD_RANK");
  e.ompi_size = env_int("OMPI_COMM_WORLD_SIZE");
  e.ompi_local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK");
  e.pmi_rank = env_int("PMI_RANK");
  if (e.pmi_rank < 0) e.pmi_rank = env_int("PMIX_RANK");
  e.pmi_size = env_int("PMI_SIZE");
  e.slurm_procid = env_int("SLURM_PROCID");
  e.slurm_ntasks = env_int("SLURM_NTASKS");
  e.slurm_localid = env_int("SLURM_LOCALID");
  if (e.ompi_rank >= 0) {
    e.launcher = "openmpi";
    e.rank = e.ompi_rank;
    e.size = e.ompi_size;
    e.local_rank = e.ompi_local_rank;
  } else if (e.pmi_rank >= 0) {
    e.launcher = "pmi";
    e.rank = e.pmi_rank;
    e.size = e.pmi_size;
  } else if (e.slurm_procid >= 0) {
    e.launcher = "slurm";
    e.rank = e.slurm_procid;
    e.size = e.slurm_ntasks;
    e.local_rank = e.slurm_localid;
  }
  return e;
}

const RuntimeInfo& init(const InitOptions& options) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (s.initialized) return s.info;
  if (s.finalized)
    throw Error("nibble.parallel.init: called after shutdown(); MPI cannot be initialised twice in one process");
  if (options.deadline.count() <= 0)
    throw InvalidArgument("nibble.parallel.init: deadline must be positive, got " +
                          std::to_string(options.deadline.count()) + " ms");

  RuntimeInfo info;
  info.env = read_launch_env();
  info.deadline = options.deadline;
  info.liveness_probe = options.liveness_probe;

  int already = 0;
  check_mpi(MPI_Initialized(&already), "MPI_Initialized");
  if (already) {
    check_mpi(MPI_Query_thread(&info.thread_level), "MPI_Query_thread");
  } else {
    // Open MPI's nonblocking collectives (libnbc), which every Communicator call uses, pick a binomial tree
    // for any in-place all-reduce and for any all-reduce on fewer than 4 ranks: several times slower than
    // MPI_Allreduce from 4 KiB up. Rabenseifner (reduce-scatter + all-gather; a ring for fewer elements than
    // ranks) matches it (benchmarks/bench_collectives, docs/PARALLEL.md). An explicit setting of the
    // variable wins; other MPI implementations ignore it.
    setenv("OMPI_MCA_coll_libnbc_iallreduce_algorithm", "3", /*overwrite=*/0);
    // SERIALIZED: any thread may communicate, one at a time (the Python trainer's thread, a C++ trainer's).
    check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &info.thread_level), "MPI_Init_thread");
    info.owns_mpi = true;
  }
  check_mpi(MPI_Comm_rank(MPI_COMM_WORLD, &info.rank), "MPI_Comm_rank");
  check_mpi(MPI_Comm_size(MPI_COMM_WORLD, &info.world_size), "MPI_Comm_size");

  const LaunchEnv& env = info.env;
  if (env.size >= 0 && env.size != info.world_size) launch_mismatch(env, "a world size of", env.size, info.world_size);
  if (env.rank >= 0 && env.rank != info.rank) launch_mismatch(env, "rank", env.rank, info.rank);

  MPI_Comm node = MPI_COMM_NULL;
  check_mpi(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, info.rank, MPI_INFO_NULL, &node),
            "MPI_Comm_split_type");
  check_mpi(MPI_Comm_rank(node, &info.local_rank), "MPI_Comm_rank");
  check_mpi(MPI_Comm_size(node, &info.local_size), "MPI_Comm_size");
  MPI_Comm_free(&node);

  char host[256] = {};
  if (gethostname(host, sizeof host - 1) == 0) info.hostname = host;

#if NIBBLE_PARALLEL_CUDA
  if (cudaGetDeviceCount(&info.device_count) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: a CPU rank
    info.device_count = 0;
  }
  if (options.select_device && info.device_count > 0) {
    info.device = device_for_local_rank(info.local_rank, info.device_count);
    const cudaError_t rc = cudaSetDevice(info.device);
    if (rc != cudaSuccess)
      throw Error("nibble.parallel.init: cudaSetDevice(" + std::to_string(info.device) + ") for local rank " +
                  std::to_string(info.local_rank) + " failed: " + cudaGetErrorString(rc));
  }
#endif

  s.world = MpiCommunicator::duplicate(MPI_COMM_WORLD, "world", CommOptions{options.deadline, options.liveness_probe});
  s.info = info;
  s.initialized = true;
  if (info.owns_mpi) std::atexit(shutdown_at_exit);  // a program that forgets shutdown() still exits cleanly
  return s.info;
}

bool is_initialized() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  return s.initialized;
}

int device_for_local_rank(int local_rank, int device_count) {
  if (local_rank < 0) throw InvalidArgument("device_for_local_rank: local rank " + std::to_string(local_rank) + " < 0");
  return device_count > 0 ? local_rank % device_count : -1;
}

int cores_per_rank() {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  const long online = sysconf(_SC_NPROCESSORS_ONLN);
  if (sched_getaffinity(0, sizeof allowed, &allowed) != 0 || online <= 0) return 1;
  const int mine = CPU_COUNT(&allowed);
  // A set smaller than the machine was chosen for this rank by its launcher: its cores are its own.
  if (mine < online) return std::max(1, mine);
  const int sharing = is_initialized() ? info().local_size : 1;
  return std::max(1, mine / std::max(1, sharing));
}

const RuntimeInfo& info() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.initialized)
    throw Error("nibble.parallel: the runtime is not initialised; call nibble::parallel::init() first");
  return s.info;
}

Communicator& world() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.initialized)
    throw Error("nibble.parallel: the runtime is not initialised; call nibble::parallel::init() first");
  return *s.world;
}

void shutdown() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.initialized) return;
  s.world.reset();
  s.initialized = false;
  s.finalized = s.info.owns_mpi;  // MPI someone else initialised can host another init()
  if (s.info.owns_mpi) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) check_mpi(MPI_Finalize(), "MPI_Finalize");
  }
}

void abort_job(const std::string& why, int code) {
  std::fprintf(stderr, "%s\n", why.c_str());
  std::fflush(stderr);
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

}  // namespace nibble::parallel
