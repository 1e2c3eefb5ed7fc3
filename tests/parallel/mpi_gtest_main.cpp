// main() of the multi-rank GoogleTest binaries (run under mpirun). Initialises nibble::parallel with a short
// deadline (so a desynchronised test fails in seconds instead of hanging), prints the usual report from
// rank 0 only, lets the other ranks print just their own failures (prefixed with their rank), and makes the
// exit status agree across ranks: any failure anywhere fails the job.
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <span>

#include "parallel/mpi_communicator.h"
#include "parallel/runtime.h"

namespace {

namespace par = nibble::parallel;

class RankFailurePrinter : public testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_, r.file_name() ? r.file_name() : "?", r.line_number(),
                 r.message());
  }
  void OnTestEnd(const testing::TestInfo& info) override {
    if (info.result()->Failed())
      std::fprintf(stderr, "[rank %d] FAILED %s.%s\n", rank_, info.test_suite_name(), info.name());
  }

 private:
  int rank_;
};

// Re-aligns the ranks after every test on a group of its own, so one test's failure cannot leak into the next.
class RankSync : public testing::EmptyTestEventListener {
 public:
  explicit RankSync(par::Communicator& sync) : sync_(sync) {}
  void OnTestEnd(const testing::TestInfo&) override {
    try {
      sync_.barrier();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "rank sync after a test failed: %s\n", e.what());
    }
  }

 private:
  par::Communicator& sync_;
};

}  // namespace

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  const par::RuntimeInfo& info = par::init({.deadline = std::chrono::seconds(5)});
  // Deadline of the sync barrier: long enough for the slowest test on an oversubscribed machine.
  auto sync = par::MpiCommunicator::duplicate(MPI_COMM_WORLD, "test_sync", {std::chrono::seconds(60)});

  testing::TestEventListeners& listeners = testing::UnitTest::GetInstance()->listeners();
  if (info.rank != 0) {
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(info.rank));
  }
  listeners.Append(new RankSync(*sync));

  const int rc = RUN_ALL_TESTS();
  int32_t failed = rc != 0 ? 1 : 0;
  sync->all_reduce(std::span<int32_t>(&failed, 1), par::ReduceOp::kMax);
  if (info.rank == 0 && failed && rc == 0) std::printf("FAILED on another rank (see the [rank N] lines on stderr)\n");
  sync.reset();
  par::shutdown();
  return failed ? 1 : 0;
}
