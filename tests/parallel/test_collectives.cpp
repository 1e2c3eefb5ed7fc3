// Every collective of the MPI Communicator against hand-computed results, for each element type, equal and
// uneven sizes (including empty parts), in place and out of place, on the whole world and on groups whose
// ranks run opposite to the world's; argument errors; received-length errors; nonblocking Work.
// Run under mpirun with 2 and 4 ranks (tests/parallel/CMakeLists.txt).
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "parallel/mpi_communicator.h"
#include "parallel/runtime.h"
#include "precision/error.h"

namespace {

namespace par = nibble::parallel;
using par::BFloat16;
using par::ReduceOp;
constexpr par::CommOptions kTestOptions{std::chrono::seconds(5)};

template <class T>
T from_double(double v) {
  if constexpr (std::is_same_v<T, BFloat16>)
    return par::float_to_bf16(static_cast<float>(v));
  else
    return static_cast<T>(v);
}
template <class T>
double to_double(T v) {
  if constexpr (std::is_same_v<T, BFloat16>)
    return par::bf16_to_float(v);
  else
    return static_cast<double>(v);
}

// Element i of group rank r: small integers, exact in every type; a sum over 4 ranks stays below 256.
int64_t x(int r, size_t i) {
  return 3 * (r + 1) + static_cast<int64_t>(i % 7);
}
// Element e of the block rank `src` sends to rank `dst` in an all-to-all.
int64_t y(int src, int dst, size_t e) {
  return (src * 16 + dst * 4 + static_cast<int64_t>(e)) % 100;
}

template <class T>
std::vector<T> values(size_t n, const std::function<double(size_t)>& f) {
  std::vector<T> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = from_double<T>(f(i));
  return v;
}

template <class T>
void expect_values(const std::vector<T>& got, const std::function<double(size_t)>& want, const std::string& what) {
  for (size_t i = 0; i < got.size(); ++i) {
    if (to_double(got[i]) != want(i)) {
      ADD_FAILURE() << what << ": element " << i << " is " << to_double(got[i]) << ", expected " << want(i);
      return;
    }
  }
}

std::vector<size_t> uneven_counts(int n) {  // e.g. [2, 3, 4, 0] for 4 ranks: uneven, one rank empty
  std::vector<size_t> c(static_cast<size_t>(n));
  for (int k = 0; k < n; ++k) c[static_cast<size_t>(k)] = k == n - 1 ? 0 : static_cast<size_t>(k + 2);
  return c;
}
std::vector<size_t> displacements(const std::vector<size_t>& c) {
  std::vector<size_t> d(c.size(), 0);
  std::exclusive_scan(c.begin(), c.end(), d.begin(), size_t{0});
  return d;
}

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

// The groups every typed test runs on: a copy of the world, and two halves (even / odd world ranks) whose
// group ranks run opposite to world ranks, so a backend that confused group and world ranks fails. With two
// ranks the halves are single ranks, which exercises the size-1 path.
std::vector<std::unique_ptr<par::MpiCommunicator>> test_groups() {
  std::vector<std::unique_ptr<par::MpiCommunicator>> g;
  g.push_back(par::MpiCommunicator::duplicate(MPI_COMM_WORLD, "world_copy", kTestOptions));
  const int wr = world_rank();
  g.push_back(par::MpiCommunicator::split(MPI_COMM_WORLD, wr % 2, -wr, "reversed_half", kTestOptions));
  return g;
}

std::string where(const par::Communicator& g, const char* op, size_t count = 0) {
  return std::string(op) + " on " + g.describe() + " count " + std::to_string(count) + " rank " +
         std::to_string(g.rank());
}

template <class T>
class Collectives : public testing::Test {};
using ElementTypes = testing::Types<float, double, int32_t, int64_t, uint8_t, BFloat16>;
TYPED_TEST_SUITE(Collectives, ElementTypes);

TYPED_TEST(Collectives, AllReduce) {
  using T = TypeParam;
  for (auto& g : test_groups()) {
    const int n = g->size(), me = g->rank();
    for (size_t count : {size_t{0}, size_t{1}, size_t{37}, size_t{1000}}) {
      const auto sum = [n](size_t i) {
        double s = 0;
        for (int r = 0; r < n; ++r) s += static_cast<double>(x(r, i));
        return s;
      };
      const std::vector<T> in = values<T>(count, [me](size_t i) { return static_cast<double>(x(me, i)); });
      std::vector<T> out(count, from_double<T>(99));
      g->all_reduce(std::span<const T>(in), std::span<T>(out), ReduceOp::kSum);
      expect_values(out, sum, where(*g, "all_reduce sum", count));

      std::vector<T> buf = in;  // in place
      g->all_reduce(std::span<T>(buf), ReduceOp::kMax);
      expect_values(
          buf, [n](size_t i) { return static_cast<double>(x(n - 1, i)); }, where(*g, "all_reduce max in place", count));

      if constexpr (!std::is_integral_v<T>) {
        buf = in;
        g->all_reduce(std::span<T>(buf), ReduceOp::kAvg);
        expect_values(
            buf, [&](size_t i) { return sum(i) / n; }, where(*g, "all_reduce avg", count));
      }
    }
  }
}

TYPED_TEST(Collectives, ReduceScatterEqualAndUneven) {
  using T = TypeParam;
  for (auto& g : test_groups()) {
    const int n = g->size(), me = g->rank();
    const auto sum_at = [n](size_t k) {
      double s = 0;
      for (int r = 0; r < n; ++r) s += static_cast<double>(x(r, k));
      return s;
    };
    const size_t per = 5;
    const std::vector<T> in = values<T>(per * n, [me](size_t k) { return static_cast<double>(x(me, k)); });
    std::vector<T> out(per, from_double<T>(99));
    g->reduce_scatter(std::span<const T>(in), std::span<T>(out), ReduceOp::kSum);
    expect_values(
        out, [&](size_t j) { return sum_at(me * per + j); }, where(*g, "reduce_scatter equal", per));
    if constexpr (!std::is_integral_v<T>) {
      g->reduce_scatter(std::span<const T>(in), std::span<T>(out), ReduceOp::kAvg);
      expect_values(
          out, [&](size_t j) { return sum_at(me * per + j) / n; }, where(*g, "reduce_scatter avg", per));
    }

    const std::vector<size_t> counts = uneven_counts(n), displ = displacements(counts);
    const size_t total = std::accumulate(counts.begin(), counts.end(), size_t{0});
    const std::vector<T> vin = values<T>(total, [me](size_t k) { return static_cast<double>(x(me, k)); });
    std::vector<T> vout(counts[static_cast<size_t>(me)], from_double<T>(99));
    g->reduce_scatter(std::span<const T>(vin), std::span<T>(vout), ReduceOp::kMax, counts);
    expect_values(
        vout, [&](size_t j) { return static_cast<double>(x(n - 1, displ[static_cast<size_t>(me)] + j)); },
        where(*g, "reduce_scatter uneven max", total));
    g->reduce_scatter(std::span<const T>(vin), std::span<T>(vout), ReduceOp::kSum, counts);
    expect_values(
        vout, [&](size_t j) { return sum_at(displ[static_cast<size_t>(me)] + j); },
        where(*g, "reduce_scatter uneven sum", total));
  }
}

TYPED_TEST(Collectives, AllGatherEqualUnevenAndInPlace) {
  using T = TypeParam;
  for (auto& g : test_groups()) {
    const int n = g->size(), me = g->rank();
    const size_t per = 3;
    const std::vector<T> in = values<T>(per, [me](size_t j) { return static_cast<double>(x(me, j)); });
    std::vector<T> out(per * n, from_double<T>(99));
    g->all_gather(std::span<const T>(in), std::span<T>(out));
    expect_values(
        out, [](size_t k) { return static_cast<double>(x(static_cast<int>(k / per), k % per)); },
        where(*g, "all_gather equal", per));

    std::vector<T> inplace(per * n, from_double<T>(99));
    std::copy(in.begin(), in.end(), inplace.begin() + static_cast<std::ptrdiff_t>(me * per));
    g->all_gather(std::span<const T>(inplace.data() + me * per, per), std::span<T>(inplace));
    expect_values(
        inplace, [](size_t k) { return static_cast<double>(x(static_cast<int>(k / per), k % per)); },
        where(*g, "all_gather in place", per));

    const std::vector<size_t> counts = uneven_counts(n), displ = displacements(counts);
    const size_t total = std::accumulate(counts.begin(), counts.end(), size_t{0});
    const std::vector<T> vin =
        values<T>(counts[static_cast<size_t>(me)], [me](size_t j) { return static_cast<double>(x(me, j)); });
    std::vector<T> vout(total, from_double<T>(99));
    g->all_gather(std::span<const T>(vin), std::span<T>(vout), counts);
    expect_values(
        vout,
        [&](size_t k) {
          int r = 0;
          while (k >= displ[static_cast<size_t>(r)] + counts[static_cast<size_t>(r)]) ++r;
          return static_cast<double>(x(r, k - displ[static_cast<size_t>(r)]));
        },
        where(*g, "all_gather uneven", total));
  }
}

TYPED_TEST(Collectives, AllToAllEqualAndUneven) {
  using T = TypeParam;
  for (auto& g : test_groups()) {
    const int n = g->size(), me = g->rank();
    const size_t b = 2;
    const std::vector<T> in =
        values<T>(b * n, [me](size_t k) { return static_cast<double>(y(me, static_cast<int>(k / b), k % b)); });
    std::vector<T> out(b * n, from_double<T>(99));
    g->all_to_all(std::span<const T>(in), std::span<T>(out));
    expect_values(
        out, [me](size_t k) { return static_cast<double>(y(static_cast<int>(k / b), me, k % b)); },
        where(*g, "all_to_all equal", b));

    // Rank src sends c(src, dst) elements to dst: uneven, asymmetric, nothing to itself.
    const auto c = [](int src, int dst) { return static_cast<size_t>((2 * src + dst) % 3 + (src == dst ? 0 : 1)); };
    std::vector<size_t> sc(static_cast<size_t>(n)), rc(static_cast<size_t>(n));
    for (int r = 0; r < n; ++r) {
      sc[static_cast<size_t>(r)] = c(me, r);
      rc[static_cast<size_t>(r)] = c(r, me);
    }
    const std::vector<size_t> sd = displacements(sc), rd = displacements(rc);
    std::vector<T> vin(std::accumulate(sc.begin(), sc.end(), size_t{0}));
    for (int r = 0; r < n; ++r)
      for (size_t e = 0; e < sc[static_cast<size_t>(r)]; ++e)
        vin[sd[static_cast<size_t>(r)] + e] = from_double<T>(static_cast<double>(y(me, r, e)));
    std::vector<T> vout(std::accumulate(rc.begin(), rc.end(), size_t{0}), from_double<T>(99));
    g->all_to_all(std::span<const T>(vin), std::span<T>(vout), sc, rc);
    expect_values(
        vout,
        [&](size_t k) {
          int r = 0;
          while (k >= rd[static_cast<size_t>(r)] + rc[static_cast<size_t>(r)]) ++r;
          return static_cast<double>(y(r, me, k - rd[static_cast<size_t>(r)]));
        },
        where(*g, "all_to_all uneven", vout.size()));
  }
}

TYPED_TEST(Collectives, BroadcastFromEachEnd) {
  using T = TypeParam;
  for (auto& g : test_groups()) {
    const int n = g->size(), me = g->rank();
    for (int root : {n - 1, 0}) {
      std::vector<T> buf = values<T>(19, [&](size_t i) { return me == root ? static_cast<double>(x(root, i)) : 0.0; });
      g->broadcast(std::span<T>(buf), root);
      expect_values(
          buf, [root](size_t i) { return static_cast<double>(x(root, i)); }, where(*g, "broadcast", 19));
    }
  }
}

TYPED_TEST(Collectives, SendRecvRingAndPingPong) {
  using T = TypeParam;
  for (auto& g : test_groups()) {
    const int n = g->size(), me = g->rank();
    const int next = (me + 1) % n, prev = (me + n - 1) % n;
    const std::vector<T> mine = values<T>(11, [me](size_t i) { return static_cast<double>(x(me, i)); });
    std::vector<T> got(11, from_double<T>(99));
    g->send_recv(std::span<const T>(mine), next, std::span<T>(got), prev, /*tag=*/7);
    expect_values(
        got, [prev](size_t i) { return static_cast<double>(x(prev, i)); }, where(*g, "send_recv ring", 11));

    if (n < 2) continue;
    if (me == 0) {
      g->send(std::span<const T>(mine), 1, /*tag=*/3);
      std::vector<T> back(9, from_double<T>(99));
      g->recv(std::span<T>(back), 1, /*tag=*/4);
      expect_values(
          back, [](size_t i) { return static_cast<double>(x(1, i)); }, where(*g, "recv", 9));
    } else if (me == 1) {
      std::vector<T> first(11, from_double<T>(99));
      g->recv(std::span<T>(first), 0, /*tag=*/3);
      expect_values(
          first, [](size_t i) { return static_cast<double>(x(0, i)); }, where(*g, "recv", 11));
      g->send(std::span<const T>(mine.data(), 9), 0, /*tag=*/4);
    }
    g->barrier();
  }
}

// ---- typed-span plumbing, errors, Work ---------------------------------------------------------------------

TEST(Communicator, WorldMatchesMpi) {
  par::Communicator& w = par::world();
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  EXPECT_EQ(w.rank(), rank);
  EXPECT_EQ(w.size(), size);
  EXPECT_EQ(w.world_rank(), rank);
  EXPECT_EQ(w.name(), "world");
  EXPECT_STREQ(w.backend(), "mpi");
  std::vector<int> ids(static_cast<size_t>(size));
  std::iota(ids.begin(), ids.end(), 0);
  EXPECT_EQ(w.members(), ids);
  EXPECT_EQ(w.deadline(), std::chrono::seconds(5));  // the tests' init deadline
}

TEST(Communicator, ReversedGroupMembers) {
  auto groups = test_groups();
  const par::Communicator& half = *groups[1];
  const int wr = world_rank();
  // members ordered by group rank = descending world rank of the same parity
  for (size_t i = 1; i < half.members().size(); ++i) EXPECT_GT(half.members()[i - 1], half.members()[i]);
  EXPECT_EQ(half.members()[static_cast<size_t>(half.rank())], wr);
  for (int m : half.members()) EXPECT_EQ(m % 2, wr % 2);
}

TEST(Communicator, Bfloat16Rounding) {
  EXPECT_EQ(par::float_to_bf16(1.0f).bits, 0x3f80);
  EXPECT_EQ(par::float_to_bf16(1.0f + 0x1p-8f).bits, 0x3f80);      // tie -> even
  EXPECT_EQ(par::float_to_bf16(1.0f + 3 * 0x1p-8f).bits, 0x3f82);  // tie -> even (up)
  EXPECT_EQ(par::float_to_bf16(1.0f + 0x1p-7f + 0x1p-9f).bits, 0x3f81);
  EXPECT_EQ(par::float_to_bf16(-2.5f).bits, 0xc020);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(par::bf16_to_float(par::float_to_bf16(nan))));
  std::vector<uint16_t> raw = {0x3f80, 0x4000};
  const std::span<BFloat16> relabelled = par::as_bf16(std::span<uint16_t>(raw));
  EXPECT_EQ(relabelled.size(), 2u);
  EXPECT_EQ(par::bf16_to_float(relabelled[1]), 2.0f);
  EXPECT_EQ(par::const_view(relabelled).dtype, par::DType::kBFloat16);
  EXPECT_EQ(par::const_view(relabelled).bytes(), 4u);
}

// Every rank makes the same mistake, so every rank throws before sending anything and the group stays usable.
void expect_invalid(const std::function<void()>& f, const std::string& fragment) {
  try {
    f();
    ADD_FAILURE() << "expected nibble::InvalidArgument containing \"" << fragment << "\"";
  } catch (const nibble::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(Communicator, ArgumentErrorsAreCaughtBeforeSending) {
  auto g = par::MpiCommunicator::duplicate(MPI_COMM_WORLD, "errors", kTestOptions);
  const int n = g->size();
  const std::string ns = std::to_string(n);
  std::vector<float> f(3, 1.0f), big(3 * n + 1, 0.0f);
  std::vector<double> d(3, 0.0);
  std::vector<int32_t> ints(3, 1);

  expect_invalid([&] { g->all_gather(std::span<const float>(f), std::span<float>(big)); },
                 "all_gather on group 'errors' (world ranks [0, 1");
  expect_invalid([&] { g->all_gather(std::span<const float>(f), std::span<float>(big)); },
                 "output has " + std::to_string(3 * n + 1) + " elements; it needs input elements x group size = 3 x " +
                     ns + " = " + std::to_string(3 * n));
  expect_invalid([&] { g->all_reduce(std::span<int32_t>(ints), ReduceOp::kAvg); }, "avg of int32 is not defined");
  expect_invalid(
      [&] {
        g->all_reduce(par::const_view(std::span<const float>(f)), par::view(std::span<double>(d)), ReduceOp::kSum);
      },
      "input is float32 but output is float64");
  expect_invalid([&] { g->broadcast(std::span<float>(f), n); },
                 "root " + ns + " is not a rank of the group; valid: 0.." + std::to_string(n - 1));
  expect_invalid([&] { g->send(std::span<const float>(f), -1); }, "peer -1 is not a rank of the group");
  expect_invalid([&] { g->recv(std::span<float>(f), 0, 40000); }, "tag 40000 is out of range; valid: 0..32767");
  const std::vector<size_t> one = {3};
  expect_invalid([&] { g->all_gather(std::span<const float>(f), std::span<float>(big), one); },
                 "counts has 1 entries; it needs one per rank (" + ns + ")");
  std::vector<size_t> wrong_sum(static_cast<size_t>(n), 1);
  expect_invalid(
      [&] { g->reduce_scatter(std::span<const float>(big), std::span<float>(f), ReduceOp::kSum, wrong_sum); },
      "counts sum to " + ns + " but the input has " + std::to_string(big.size()) + " elements");
  std::vector<size_t> wrong_mine(static_cast<size_t>(n), 0);
  wrong_mine[static_cast<size_t>((g->rank() + 1) % n)] = f.size();
  if (n > 1)
    expect_invalid([&] { g->all_gather(std::span<const float>(f), std::span<float>(f.data(), 3), wrong_mine); },
                   "(this rank) but the input has 3 elements");
  std::vector<float> overlap(10, 0.0f);
  expect_invalid(
      [&] {
        g->all_reduce(std::span<const float>(overlap.data(), 5), std::span<float>(overlap.data() + 2, 5),
                      ReduceOp::kSum);
      },
      "input and output buffers overlap");
  const std::vector<size_t> sc(static_cast<size_t>(n), 1);
  expect_invalid([&] { g->all_to_all(std::span<const float>(f), std::span<float>(f), sc); },
                 "pass both send_counts and recv_counts");
  expect_invalid(
      [&] {
        g->all_reduce(par::ConstView{nullptr, 3, par::DType::kFloat32}, par::View{f.data(), 3, par::DType::kFloat32},
                      ReduceOp::kSum);
      },
      "input is null but has 3 elements");
  // A count MPI cannot express is refused before MPI sees it (the pointer is never dereferenced).
  void* fake = reinterpret_cast<void*>(uintptr_t{4096});
  if (n > 1)
    expect_invalid(
        [&] {
          g->all_reduce(par::ConstView{fake, size_t{INT_MAX} + 1, par::DType::kUInt8},
                        par::View{fake, size_t{INT_MAX} + 1, par::DType::kUInt8}, ReduceOp::kSum);
        },
        "exceeds MPI's int count limit (2147483647)");
  expect_invalid([&] { g->set_deadline(std::chrono::milliseconds(0)); }, "must be positive, got 0 ms");
  expect_invalid([] { par::parse_reduce_op("prod"); }, "unknown reduce op 'prod'; valid: sum, max, avg");

  // Still usable: nothing was sent.
  std::vector<int32_t> one_each(1, 1);
  g->all_reduce(std::span<int32_t>(one_each), ReduceOp::kSum);
  EXPECT_EQ(one_each[0], n);
  EXPECT_FALSE(g->failed());
}

TEST(Communicator, ReceivedLengthMustMatchTheBuffer) {
  auto g = par::MpiCommunicator::duplicate(MPI_COMM_WORLD, "lengths", kTestOptions);
  if (g->size() < 2) GTEST_SKIP() << "needs two ranks";
  const std::vector<float> five(5, 1.0f);
  if (g->rank() == 0) {
    g->send(std::span<const float>(five), 1, 1);
    g->send(std::span<const float>(five), 1, 2);
  } else if (g->rank() == 1) {
    std::vector<float> six(6), four(4);
    try {
      g->recv(std::span<float>(six), 0, 1);
      ADD_FAILURE() << "a short message was accepted";
    } catch (const nibble::Error& e) {
      EXPECT_NE(std::string(e.what()).find("received 5 elements from rank 0, expected 6"), std::string::npos)
          << e.what();
      EXPECT_NE(std::string(e.what()).find("recv on group 'lengths'"), std::string::npos) << e.what();
    }
    try {
      g->recv(std::span<float>(four), 0, 2);
      ADD_FAILURE() << "a long message was accepted";
    } catch (const nibble::Error& e) {
      EXPECT_NE(std::string(e.what()).find("is longer than the receive buffer of 4 elements"), std::string::npos)
          << e.what();
    }
  }
  g->barrier();
}

// Above 256 KiB two-rank all-reduces leave the exchange path for libnbc's: both must agree with the hand sum.
TEST(Communicator, LargeAllReduceInAndOutOfPlace) {
  for (auto& g : test_groups()) {
    const int n = g->size(), me = g->rank();
    const size_t count = 70001;  // 560 KB of float64, odd
    std::vector<double> buf(count), out(count);
    for (size_t i = 0; i < count; ++i) buf[i] = static_cast<double>(x(me, i));
    g->all_reduce(std::span<const double>(buf), std::span<double>(out), ReduceOp::kAvg);
    g->all_reduce(std::span<double>(buf), ReduceOp::kSum);
    for (size_t i = 0; i < count; i += 997) {
      double s = 0;
      for (int r = 0; r < n; ++r) s += static_cast<double>(x(r, i));
      ASSERT_EQ(buf[i], s) << g->describe() << " element " << i;
      ASSERT_EQ(out[i], s / n) << g->describe() << " element " << i;
    }
  }
}

// Two-rank groups run all_gather / reduce_scatter as paired sends and receives: a user's receive posted
// before them (same peer, any user tag) must still get the user's message, and the collectives their own.
TEST(Communicator, UserMessagesNeverMatchCollectiveTraffic) {
  for (auto& g : test_groups()) {
    if (g->size() != 2) continue;
    const int me = g->rank(), peer = 1 - me;
    std::vector<int64_t> user_in(4, -1);
    par::Work pending_recv;
    if (me == 0) pending_recv = g->recv_async(par::view(std::span<int64_t>(user_in)), peer, par::Communicator::kMaxTag);
    const std::vector<int64_t> part(4, 100 + me);
    std::vector<int64_t> whole(8, 0);
    g->all_gather(std::span<const int64_t>(part), std::span<int64_t>(whole));
    const std::vector<int64_t> both(8, 1);
    std::vector<int64_t> half(4, 0);
    g->reduce_scatter(std::span<const int64_t>(both), std::span<int64_t>(half), ReduceOp::kSum);
    if (me == 1) g->send(std::span<const int64_t>(std::vector<int64_t>(4, 7)), peer, par::Communicator::kMaxTag);
    pending_recv.wait();
    EXPECT_EQ(whole, (std::vector<int64_t>{100, 100, 100, 100, 101, 101, 101, 101})) << g->describe();
    EXPECT_EQ(half, std::vector<int64_t>(4, 2)) << g->describe();
    if (me == 0) {
      EXPECT_EQ(user_in, std::vector<int64_t>(4, 7)) << g->describe();
    }
  }
}

TEST(Communicator, NonblockingWorkCompletesInAnyWaitOrder) {
  auto g = par::MpiCommunicator::duplicate(MPI_COMM_WORLD, "async", kTestOptions);
  const int n = g->size(), me = g->rank();
  std::vector<double> a(1000, me + 1.0), b(500, 2.0 * (me + 1));
  par::Work wa = g->all_reduce_async(std::span<double>(a), ReduceOp::kSum);
  par::Work wb = g->all_reduce_async(std::span<double>(b), ReduceOp::kMax);
  EXPECT_TRUE(wa.pending() || n == 1);
  wb.wait();
  while (!wa.test()) {
  }
  EXPECT_FALSE(wa.pending());
  EXPECT_EQ(a[999], n * (n + 1) / 2.0);
  EXPECT_EQ(b[0], 2.0 * n);

  std::vector<float> c(64, 1.0f);
  { par::Work dropped = g->all_reduce_async(std::span<float>(c), ReduceOp::kSum); }  // waited by the destructor
  EXPECT_EQ(c[63], static_cast<float>(n));

  std::vector<float> part(4, static_cast<float>(me)), whole(4 * static_cast<size_t>(n));
  par::Work wg = g->all_gather_async(std::span<const float>(part), std::span<float>(whole));
  par::Work moved = std::move(wg);
  EXPECT_FALSE(wg.pending());
  moved.wait();
  for (int r = 0; r < n; ++r) EXPECT_EQ(whole[static_cast<size_t>(4 * r + 3)], static_cast<float>(r));
}

}  // namespace
