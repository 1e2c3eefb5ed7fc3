// FAULT: a rank that skips a collective makes the others fail within the deadline, with a message that names
// the group, the op, the rank (world and group rank), the step and the time waited; the group is then refused
// at once; and every rank carries on (and the job exits cleanly). Also: a receive from a silent peer times out
// and is cancelled (a late message cannot land in the abandoned buffer); a slow peer inside the deadline is
// not a fault. Run under mpirun with 2 and 4 ranks, each with a CTest TIMEOUT.
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "parallel/mesh.h"
#include "parallel/mpi_communicator.h"
#include "parallel/runtime.h"
#include "precision/error.h"

namespace {

namespace par = nibble::parallel;
using std::chrono::milliseconds;
constexpr milliseconds kDeadline{1000};
constexpr milliseconds kSlack{3000};  // scheduling delays on an oversubscribed machine

struct Outcome {
  bool threw = false;
  std::string message;
  milliseconds waited{0};
};

Outcome run(const std::function<void()>& f) {
  Outcome o;
  const auto start = par::Clock::now();
  try {
    f();
  } catch (const nibble::Error& e) {
    o.threw = true;
    o.message = e.what();
  }
  o.waited = std::chrono::duration_cast<milliseconds>(par::Clock::now() - start);
  return o;
}

void expect_contains(const std::string& message, const std::string& fragment) {
  EXPECT_NE(message.find(fragment), std::string::npos) << "missing \"" << fragment << "\" in: " << message;
}

TEST(Fault, SkippedAllReduceFailsTheOthersWithinTheDeadline) {
  auto g = par::MpiCommunicator::duplicate(MPI_COMM_WORLD, "fault_group", {kDeadline});
  const int n = g->size(), me = g->rank(), victim = n - 1;
  par::set_step(42);
  std::vector<float> buf(1024, 1.0f);  // kept alive: the abandoned operation still references it
  if (me != victim) {
    const Outcome o = run([&] { g->all_reduce(std::span<float>(buf), par::ReduceOp::kSum); });
    ASSERT_TRUE(o.threw) << "all_reduce completed although rank " << victim << " never called it";
    EXPECT_GE(o.waited, kDeadline);
    EXPECT_LT(o.waited, kDeadline + kSlack);
    expect_contains(o.message, "nibble.parallel: all_reduce timed out on group 'fault_group' (world ranks [0, 1");
    expect_contains(o.message, "backend mpi, at step 42");
    expect_contains(o.message, "world rank " + std::to_string(par::world().rank()) + " (rank " + std::to_string(me) +
                                   " of " + std::to_string(n) + " in 'fault_group') waited 1.");
    expect_contains(o.message, "(deadline 1.00 s) for sum of 1024 float32");
    expect_contains(o.message, "The group is unusable from now on.");
    if (par::world().rank() == 0) std::printf("[fault message, rank 0] %s\n", o.message.c_str());

    // The group is refused at once from now on: its abandoned collective could match a later one.
    EXPECT_TRUE(g->failed());
    const Outcome again = run([&] { g->barrier(); });
    EXPECT_TRUE(again.threw);
    EXPECT_LT(again.waited, milliseconds(100));
    expect_contains(again.message, "barrier on group 'fault_group'");
    expect_contains(again.message, "unusable after an earlier failure (all_reduce timed out at step 42)");
  } else {
    EXPECT_FALSE(g->failed());
  }
  // Every rank carries on: the world group is unaffected.
  std::vector<int32_t> alive(1, 1);
  par::world().all_reduce(std::span<int32_t>(alive), par::ReduceOp::kSum);
  EXPECT_EQ(alive[0], n);
}

TEST(Fault, SkippedReduceScatterInAMeshGroupNamesThatGroup) {
  const int world = par::world().size(), me = par::world().rank();
  par::Mesh mesh({2, 1, world / 2, 1});
  mesh.set_deadline(kDeadline);
  par::set_step(7);
  par::Communicator& tp = mesh.tp();
  std::vector<double> in(2 * 6, 1.0), out(6, 0.0);
  if (tp.rank() == 0) {  // tp rank 1 of every tp group skips the call
    const Outcome o =
        run([&] { tp.reduce_scatter(std::span<const double>(in), std::span<double>(out), par::ReduceOp::kAvg); });
    ASSERT_TRUE(o.threw);
    EXPECT_LT(o.waited, kDeadline + kSlack);
    const std::vector<int> members = par::group_members(mesh.shape(), par::GroupKind::kTp, me);
    expect_contains(o.message, "reduce_scatter timed out on group 'tp' (world ranks [" + std::to_string(members[0]) +
                                   ", " + std::to_string(members[1]) + "])");
    expect_contains(o.message, "at step 7: world rank " + std::to_string(me) + " (rank 0 of 2 in 'tp')");
    expect_contains(o.message, "for avg of 12 float64 into 6");
    if (me == 0) std::printf("[fault message, rank 0] %s\n", o.message.c_str());
    EXPECT_TRUE(tp.failed());
  }
  EXPECT_FALSE(mesh.dp().failed());  // other groups are unaffected
  mesh.dp().barrier();
}

TEST(Fault, ReceiveFromASilentPeerTimesOutAndIsCancelled) {
  auto g = par::MpiCommunicator::duplicate(MPI_COMM_WORLD, "p2p_fault", {kDeadline});
  par::set_step(9);
  std::vector<float> buf(12, -1.0f);
  if (g->rank() == 0) {
    const Outcome o = run([&] { g->recv(std::span<float>(buf), 1, /*tag=*/5); });
    ASSERT_TRUE(o.threw);
    EXPECT_LT(o.waited, kDeadline + kSlack);
    expect_contains(o.message, "recv timed out on group 'p2p_fault'");
    expect_contains(o.message, "at step 9: world rank 0 (rank 0 of");
    expect_contains(o.message, "for 12 float32 from rank 1 (world rank 1), tag 5");
  }
  par::world().barrier();
  // Now rank 1 sends the message late. The timed-out receive was cancelled, so the message stays unmatched
  // and the abandoned buffer is not written.
  if (g->rank() == 1) {
    const std::vector<float> late(12, 3.0f);
    MPI_Send(late.data(), 12, MPI_FLOAT, 0, 5, g->handle());
  } else if (g->rank() == 0) {
    int flag = 0;
    const auto start = par::Clock::now();
    while (!flag && par::Clock::now() - start < std::chrono::seconds(5))
      MPI_Iprobe(1, 5, g->handle(), &flag, MPI_STATUS_IGNORE);
    EXPECT_TRUE(flag) << "the late message was consumed by the cancelled receive";
    EXPECT_EQ(buf[0], -1.0f);
    std::vector<float> drain(12);
    MPI_Recv(drain.data(), 12, MPI_FLOAT, 1, 5, g->handle(), MPI_STATUS_IGNORE);
    EXPECT_EQ(drain[11], 3.0f);
  }
  par::world().barrier();
}

TEST(Fault, ASlowPeerInsideTheDeadlineIsNotAFault) {
  auto g = par::MpiCommunicator::duplicate(MPI_COMM_WORLD, "slow_peer", {kDeadline * 2});
  if (g->rank() == g->size() - 1) std::this_thread::sleep_for(milliseconds(300));
  std::vector<int64_t> v(3, g->rank());
  g->all_reduce(std::span<int64_t>(v), par::ReduceOp::kMax);
  EXPECT_EQ(v[2], g->size() - 1);
  EXPECT_FALSE(g->failed());
}

TEST(Fault, BeforeTheFirstStepTheMessageSaysSo) {
  auto g = par::MpiCommunicator::duplicate(MPI_COMM_WORLD, "no_step", {milliseconds(200)});
  par::set_step(-1);
  if (g->rank() == 0) {
    const Outcome o = run([&] { g->barrier(); });
    ASSERT_TRUE(o.threw);
    expect_contains(o.message, "barrier timed out on group 'no_step'");
    expect_contains(o.message, "before the first step (set_step was not called)");
  }
  par::world().barrier();
}

}  // namespace
