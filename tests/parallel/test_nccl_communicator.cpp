// The NCCL Communicator on real GPUs: all-reduce (sum, avg), uneven all-gather and reduce-scatter, all-to-all,
// broadcast, the paired send/recv ring and a barrier, checked against hand-computed results; host buffers go
// over the MPI group, a host and a device buffer in one call are refused. Without a CUDA device every rank exits 77 (a CTest skip, never a pass): on this project's
// GPU-less machines the NCCL backend is compile- and link-checked only.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "parallel/nccl_communicator.h"
#include "parallel/runtime.h"
#include "precision/error.h"

namespace {

namespace par = nibble::parallel;
int failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::fprintf(stderr, "[rank %d] FAILED: %s\n", par::info().rank, what.c_str());
  }
}

template <class T>
struct DeviceBuffer {
  T* p = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(const std::vector<T>& host) : n(host.size()) {
    cudaMalloc(reinterpret_cast<void**>(&p), std::max<size_t>(n, 1) * sizeof(T));
    cudaMemcpy(p, host.data(), n * sizeof(T), cudaMemcpyHostToDevice);
  }
  ~DeviceBuffer() { cudaFree(p); }
  std::span<T> span() { return {p, n}; }
  std::vector<T> host() const {
    std::vector<T> h(n);
    cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost);
    return h;
  }
};

void run(par::MpiCommunicator& group) {
  par::NcclCommunicator g(group);
  const int n = g.size(), me = g.rank();

  DeviceBuffer<float> a(std::vector<float>(1000, static_cast<float>(me + 1)));
  g.all_reduce(a.span(), par::ReduceOp::kSum);
  check(a.host()[999] == n * (n + 1) / 2.0f, "all_reduce sum");
  g.all_reduce(a.span(), par::ReduceOp::kAvg);
  check(a.host()[0] == n * (n + 1) / 2.0f, "all_reduce avg of equal values");

  std::vector<size_t> counts(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) counts[static_cast<size_t>(r)] = static_cast<size_t>(r + 1);
  const size_t total = std::accumulate(counts.begin(), counts.end(), size_t{0});
  DeviceBuffer<int32_t> part(std::vector<int32_t>(counts[static_cast<size_t>(me)], me));
  DeviceBuffer<int32_t> whole(std::vector<int32_t>(total, -1));
  g.all_gather(std::span<const int32_t>(part.span()), whole.span(), counts);
  const std::vector<int32_t> w = whole.host();
  check(w[0] == 0 && w[total - 1] == n - 1, "uneven all_gather");

  DeviceBuffer<int32_t> rs_in(std::vector<int32_t>(total, 1));
  DeviceBuffer<int32_t> rs_out(std::vector<int32_t>(counts[static_cast<size_t>(me)], 0));
  g.reduce_scatter(std::span<const int32_t>(rs_in.span()), rs_out.span(), par::ReduceOp::kSum, counts);
  check(rs_out.host()[0] == n, "uneven reduce_scatter");

  DeviceBuffer<double> send(std::vector<double>(static_cast<size_t>(n), me));
  DeviceBuffer<double> recv(std::vector<double>(static_cast<size_t>(n), -1));
  g.all_to_all(std::span<const double>(send.span()), recv.span());
  check(recv.host()[static_cast<size_t>(n - 1)] == n - 1, "all_to_all");

  DeviceBuffer<uint8_t> b(std::vector<uint8_t>(7, static_cast<uint8_t>(me == 0 ? 42 : 0)));
  g.broadcast(b.span(), 0);
  check(b.host()[6] == 42, "broadcast");

  DeviceBuffer<float> ring_out(std::vector<float>(5, static_cast<float>(me)));
  DeviceBuffer<float> ring_in(std::vector<float>(5, -1.0f));
  g.send_recv(std::span<const float>(ring_out.span()), (me + 1) % n, ring_in.span(), (me + n - 1) % n);
  check(ring_in.host()[4] == static_cast<float>((me + n - 1) % n), "send_recv ring");
  g.barrier();

  // Host buffers go to the MPI group the NCCL communicator was made from; mixing the two in one call is refused.
  std::vector<float> host(4, 1.0f);
  g.all_reduce(std::span<float>(host), par::ReduceOp::kSum);
  check(host[3] == static_cast<float>(n), "all_reduce of a host buffer through the NCCL group (MPI)");
  DeviceBuffer<float> dev(std::vector<float>(4, 1.0f));
  try {
    g.all_reduce(std::span<const float>(host), dev.span(), par::ReduceOp::kSum);
    check(false, "a host input with a device output was accepted");
  } catch (const nibble::InvalidArgument& e) {
    check(std::string(e.what()).find("1 buffer(s) in host memory and 1 on the device") != std::string::npos, e.what());
  }
}

}  // namespace

int main() {
  const par::RuntimeInfo& info = par::init({.deadline = std::chrono::seconds(30)});
  if (info.device < 0 || info.device_count < info.local_size) {
    if (info.rank == 0)
      std::printf(
          "%d CUDA device(s) for %d ranks on this node: the NCCL test needs one per rank (skipped; the NCCL "
          "backend is compile-checked only here)\n",
          info.device_count, info.local_size);
    par::shutdown();
    return 77;
  }
  try {
    run(dynamic_cast<par::MpiCommunicator&>(par::world()));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[rank %d] %s\n", info.rank, e.what());
    ++failures;
  }
  par::shutdown();
  return failures == 0 ? 0 : 1;
}
