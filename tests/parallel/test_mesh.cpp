// Mesh layout (Megatron order, hand-listed groups), validation messages, real groups for every layout of the
// world size, validation before any group is allocated, ranks disagreeing on the mesh; rank bootstrap.
// Run under mpirun with 2 and 4 ranks (tests/parallel/CMakeLists.txt).
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <map>
#include <numeric>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "parallel/mesh.h"
#include "parallel/mpi_communicator.h"
#include "parallel/runtime.h"
#include "precision/error.h"

namespace {

namespace par = nibble::parallel;
using par::GroupKind;
using par::MeshShape;
using Groups = std::vector<std::vector<int>>;

// All groups of `kind`, in order of group index.
Groups all_groups(const MeshShape& s, GroupKind kind) {
  std::map<int, std::vector<int>> by_index;
  for (int r = 0; r < s.size(); ++r) by_index[par::group_index(s, kind, r)] = par::group_members(s, kind, r);
  Groups g;
  for (auto& [i, m] : by_index) g.push_back(m);
  return g;
}

std::string what_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const nibble::InvalidArgument& e) {
    return e.what();
  }
  return "(no InvalidArgument)";
}

// ---- pure layout arithmetic ---------------------------------------------------------------------------------

TEST(MeshLayout, RankIsTpFastestThenCpDpPp) {
  const MeshShape s{2, 3, 2, 2};  // 24 ranks
  for (int r = 0; r < 24; ++r) {
    const par::MeshCoord c = par::coord_of(s, r);
    EXPECT_EQ(r, c.tp + 2 * (c.cp + 3 * (c.dp + 2 * c.pp)));
    EXPECT_EQ(par::rank_of(s, c), r);
  }
  EXPECT_EQ(par::coord_of(s, 13), (par::MeshCoord{1, 0, 0, 1}));  // 13 = 1 + 2*(0 + 3*(0 + 2*1))
}

TEST(MeshLayout, HandListedGroupsTp2Dp2Pp2) {
  const MeshShape s{2, 1, 2, 2};
  EXPECT_EQ(all_groups(s, GroupKind::kTp), (Groups{{0, 1}, {2, 3}, {4, 5}, {6, 7}}));
  EXPECT_EQ(all_groups(s, GroupKind::kCp), (Groups{{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}}));
  EXPECT_EQ(all_groups(s, GroupKind::kDp), (Groups{{0, 2}, {1, 3}, {4, 6}, {5, 7}}));
  EXPECT_EQ(all_groups(s, GroupKind::kPp), (Groups{{0, 4}, {1, 5}, {2, 6}, {3, 7}}));
  EXPECT_EQ(all_groups(s, GroupKind::kDpCp), (Groups{{0, 2}, {1, 3}, {4, 6}, {5, 7}}));
  EXPECT_EQ(all_groups(s, GroupKind::kTpDpCp), (Groups{{0, 1, 2, 3}, {4, 5, 6, 7}}));
}

TEST(MeshLayout, HandListedGroupsTp2Cp2Dp2) {
  const MeshShape s{2, 2, 2, 1};
  EXPECT_EQ(all_groups(s, GroupKind::kTp), (Groups{{0, 1}, {2, 3}, {4, 5}, {6, 7}}));
  EXPECT_EQ(all_groups(s, GroupKind::kCp), (Groups{{0, 2}, {1, 3}, {4, 6}, {5, 7}}));
  EXPECT_EQ(all_groups(s, GroupKind::kDp), (Groups{{0, 4}, {1, 5}, {2, 6}, {3, 7}}));
  EXPECT_EQ(all_groups(s, GroupKind::kPp), (Groups{{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}}));
  EXPECT_EQ(all_groups(s, GroupKind::kDpCp), (Groups{{0, 2, 4, 6}, {1, 3, 5, 7}}));
  EXPECT_EQ(all_groups(s, GroupKind::kTpDpCp), (Groups{{0, 1, 2, 3, 4, 5, 6, 7}}));
}

TEST(MeshLayout, HandListedGroupsCp2Pp3) {
  const MeshShape s{1, 2, 1, 3};
  EXPECT_EQ(all_groups(s, GroupKind::kCp), (Groups{{0, 1}, {2, 3}, {4, 5}}));
  EXPECT_EQ(all_groups(s, GroupKind::kPp), (Groups{{0, 2, 4}, {1, 3, 5}}));
  EXPECT_EQ(all_groups(s, GroupKind::kTpDpCp), (Groups{{0, 1}, {2, 3}, {4, 5}}));
}

// Every shape of 1..16 ranks: each kind partitions the world; group rank = position in the member list.
TEST(MeshLayout, GroupsPartitionTheWorldForEveryShape) {
  int shapes = 0;
  for (int world = 1; world <= 16; ++world)
    for (int tp = 1; tp <= world; ++tp)
      for (int cp = 1; tp * cp <= world; ++cp)
        for (int pp = 1; tp * cp * pp <= world; ++pp) {
          if (world % (tp * cp * pp) != 0) continue;
          const MeshShape s{tp, cp, world / (tp * cp * pp), pp};
          ++shapes;
          for (GroupKind kind : par::kAllGroupKinds) {
            std::vector<int> seen(static_cast<size_t>(world), 0);
            for (const auto& g : all_groups(s, kind)) {
              for (size_t i = 0; i < g.size(); ++i) {
                ++seen[static_cast<size_t>(g[i])];
                EXPECT_EQ(par::group_rank(s, kind, g[i]), static_cast<int>(i)) << s.str();
                EXPECT_EQ(par::group_members(s, kind, g[i]), g) << s.str();
              }
            }
            for (int v : seen) EXPECT_EQ(v, 1) << s.str() << " " << par::group_name(kind);
          }
          // tp_dp_cp never spans pipeline stages.
          for (const auto& g : all_groups(s, GroupKind::kTpDpCp))
            for (int r : g) EXPECT_EQ(par::coord_of(s, r).pp, par::coord_of(s, g[0]).pp);
        }
  EXPECT_GT(shapes, 100);
}

TEST(MeshValidation, MessagesNameTheFailingConstraint) {
  EXPECT_NO_THROW(par::validate_mesh({2, 1, 2, 1}, 4,
                                     {.num_heads = 8,
                                      .num_kv_heads = 4,
                                      .hidden = 512,
                                      .ffn_hidden = 1536,
                                      .vocab = 256,
                                      .num_layers = 6,
                                      .seq_len = 128}));
  EXPECT_NE(what_of([] {
              par::validate_mesh({3, 1, 1, 1}, 3, {.num_heads = 8});
            }).find("tp=3 does not divide num_heads=8"),
            std::string::npos);
  EXPECT_NE(what_of([] {
              par::validate_mesh({2, 1, 3, 1}, 4);
            }).find("tp*cp*dp*pp = 2*1*3*1 = 6 does not equal the world size 4 (dp=2 would fit)"),
            std::string::npos);
  EXPECT_NE(what_of([] {
              par::validate_mesh({4, 1, 1, 1}, 4, {.num_heads = 8, .num_kv_heads = 2});
            }).find("tp=4 does not divide num_kv_heads=2 (each tp rank holds whole key-value heads)"),
            std::string::npos);
  EXPECT_NE(what_of([] {
              par::validate_mesh({1, 1, 1, 1}, 1, {.num_heads = 8, .num_kv_heads = 3});
            }).find("num_kv_heads=3 does not divide num_heads=8"),
            std::string::npos);
  EXPECT_NE(what_of([] {
              par::validate_mesh({3, 1, 1, 1}, 3, {.hidden = 512});
            }).find("tp=3 does not divide hidden=512"),
            std::string::npos);
  EXPECT_NE(what_of([] {
              par::validate_mesh({2, 1, 1, 1}, 2, {.vocab = 50257});
            }).find("tp=2 does not divide vocab=50257 (pad the vocabulary to a multiple of tp, e.g. 50258)"),
            std::string::npos);
  EXPECT_NE(what_of([] {
              par::validate_mesh({1, 1, 1, 3}, 3, {.num_layers = 8});
            }).find("pp=3 does not divide num_layers=8"),
            std::string::npos);
  EXPECT_NE(what_of([] {
              par::validate_mesh({1, 2, 1, 1}, 2, {.seq_len = 1022});
            }).find("cp=2 needs seq_len divisible by 2*cp=4 (load-balanced causal chunks), got seq_len=1022"),
            std::string::npos);
  EXPECT_NE(what_of([] {
              par::validate_mesh({4, 2, 1, 1}, 8, {.seq_len = 20, .sequence_parallel = true});
            }).find("sequence parallel needs tp=4 to divide the tokens of a cp rank, seq_len/cp = 20/2 = 10"),
            std::string::npos);
  EXPECT_NE(what_of([] { par::validate_mesh({0, 1, 1, 1}, 1); }).find("tp=0 must be at least 1"), std::string::npos);
  EXPECT_NE(what_of([] {
              par::validate_mesh({1, 1, 1, 1}, 1, {.hidden = -4});
            }).find("hidden=-4 must be >= 0"),
            std::string::npos);
  // Every failing constraint is listed, not just the first.
  const std::string both = what_of([] { par::validate_mesh({3, 1, 1, 1}, 4, {.num_heads = 8, .vocab = 10}); });
  EXPECT_NE(both.find("invalid mesh tp=3 cp=1 dp=1 pp=1 for world size 4: "), std::string::npos) << both;
  EXPECT_NE(both.find("does not equal the world size 4"), std::string::npos) << both;
  EXPECT_NE(both.find("tp=3 does not divide num_heads=8"), std::string::npos) << both;
  EXPECT_NE(both.find("tp=3 does not divide vocab=10"), std::string::npos) << both;
  EXPECT_EQ(par::parse_group_kind("dp_cp"), GroupKind::kDpCp);
  EXPECT_NE(what_of([] { par::parse_group_kind("ep"); }).find("unknown group 'ep'"), std::string::npos);
}

// ---- real groups over MPI --------------------------------------------------------------------------------------

std::vector<MeshShape> shapes_of(int world) {
  std::vector<MeshShape> out;
  for (int tp = 1; tp <= world; ++tp)
    for (int cp = 1; tp * cp <= world; ++cp)
      for (int pp = 1; tp * cp * pp <= world; ++pp)
        if (world % (tp * cp * pp) == 0) out.push_back({tp, cp, world / (tp * cp * pp), pp});
  return out;
}

TEST(Mesh, EveryLayoutOfTheWorldBuildsTheGroupsTheArithmeticSays) {
  const int world = par::world().size(), me = par::world().rank();
  const std::vector<MeshShape> shapes = shapes_of(world);
  EXPECT_EQ(shapes.size(), world == 4 ? 10u : world == 2 ? 4u : shapes.size());
  for (const MeshShape& s : shapes) {
    par::Mesh mesh(s);
    EXPECT_EQ(mesh.rank(), me);
    EXPECT_EQ(mesh.coord(), par::coord_of(s, me));
    for (GroupKind kind : par::kAllGroupKinds) {
      par::Communicator& g = mesh.group(kind);
      const std::vector<int> expect = par::group_members(s, kind, me);
      const std::string where = s.str() + " group " + par::group_name(kind);
      EXPECT_EQ(g.name(), par::group_name(kind)) << where;
      EXPECT_EQ(g.members(), expect) << where;
      EXPECT_EQ(g.rank(), par::group_rank(s, kind, me)) << where;
      EXPECT_EQ(g.size(), static_cast<int>(expect.size())) << where;
      EXPECT_EQ(g.deadline(), std::chrono::seconds(5)) << where;  // the runtime's default
      // Communicate to prove membership and order: gathering world ranks reproduces the member list.
      const int32_t mine = me;
      std::vector<int32_t> gathered(expect.size(), -1);
      g.all_gather(std::span<const int32_t>(&mine, 1), std::span<int32_t>(gathered));
      EXPECT_EQ(std::vector<int>(gathered.begin(), gathered.end()), expect) << where;
      int64_t sum = me;
      g.all_reduce(std::span<int64_t>(&sum, 1), par::ReduceOp::kSum);
      EXPECT_EQ(sum, std::accumulate(expect.begin(), expect.end(), int64_t{0})) << where;
    }
  }
}

// A device-group factory is asked only for groups whose members each have a GPU of their own
// (parallel/device_group_plan.h): on these CPU ranks for none, so every group stays its MPI group, and the plan
// says why for each group (one rank: nothing to communicate; several: no GPU, host-staged).
TEST(Mesh, DeviceGroupsOnlyWhereEveryMemberHasItsOwnGpu) {
  const int world = par::world().size(), me = par::world().rank();
  ASSERT_LT(par::info().device, 0) << "this test describes CPU ranks";
  int asked = 0;
  const par::GroupFactory factory = [&](par::MpiCommunicator& group, const par::CommOptions& options) {
    ++asked;
    return std::unique_ptr<par::Communicator>(par::MpiCommunicator::duplicate(group.handle(), "device", options));
  };
  const MeshShape s{world / 2, 1, 2, 1};  // tp = world / 2, dp = 2: some groups of one rank when world = 2
  par::Mesh mesh(s, {}, par::CommOptions{std::chrono::seconds(5)}, factory);
  EXPECT_EQ(asked, 0);
  EXPECT_EQ(mesh.backend(), "mpi");
  for (GroupKind kind : par::kAllGroupKinds) {
    const par::DeviceGroupPlan& plan = mesh.device_plan(kind);
    const size_t size = par::group_members(s, kind, me).size();
    const std::string where = s.str() + " group " + par::group_name(kind);
    EXPECT_EQ(plan.backend, size == 1 ? par::DeviceGroupBackend::kNone : par::DeviceGroupBackend::kHostStagedMpi)
        << where;
    EXPECT_NE(plan.why.find(size == 1 ? "one rank" : "has no GPU"), std::string::npos) << where << ": " << plan.why;
    EXPECT_EQ(&mesh.group(kind), &mesh.host_group(kind)) << where;
  }
}

TEST(Mesh, AcceptsAModelItDivides) {
  const int world = par::world().size();
  par::Mesh mesh({world, 1, 1, 1}, {.num_heads = 4 * world,
                                    .num_kv_heads = world,
                                    .hidden = 64 * world,
                                    .vocab = 1024,
                                    .num_layers = 3,
                                    .seq_len = 64,
                                    .sequence_parallel = true});
  EXPECT_EQ(mesh.tp().size(), world);
  mesh.set_deadline(std::chrono::seconds(7));
  EXPECT_EQ(mesh.dp().deadline(), std::chrono::seconds(7));
}

TEST(Mesh, ValidationFailsBeforeAnyGroupIsAllocated) {
  const int world = par::world().size();
  const int64_t before = par::MpiCommunicator::instances_created();
  // Heads not divisible by tp.
  const std::string heads = what_of([&] { par::Mesh m({world, 1, 1, 1}, {.num_heads = world + 1}); });
  EXPECT_NE(heads.find("tp=" + std::to_string(world) + " does not divide num_heads=" + std::to_string(world + 1)),
            std::string::npos)
      << heads;
  // A mesh that does not divide the world.
  const std::string size = what_of([&] { par::Mesh m({1, 1, world + 1, 1}); });
  EXPECT_NE(size.find("does not equal the world size " + std::to_string(world)), std::string::npos) << size;
  EXPECT_EQ(par::MpiCommunicator::instances_created(), before) << "a group was allocated before validation failed";

  // Validation is local: one rank alone can fail it (no collective is entered, so nobody waits).
  if (par::world().rank() == 0) {
    const auto start = par::Clock::now();
    EXPECT_THROW(par::Mesh({2, 1, world, 1}), nibble::InvalidArgument);
    EXPECT_LT(par::Clock::now() - start, std::chrono::seconds(1));
  }
  EXPECT_EQ(par::MpiCommunicator::instances_created(), before);
}

TEST(Mesh, RanksThatDisagreeOnTheShapeAllFailWithoutCreatingGroups) {
  const int world = par::world().size(), me = par::world().rank();
  const int64_t before = par::MpiCommunicator::instances_created();
  const MeshShape mine = me == world - 1 ? MeshShape{1, 1, 1, world} : MeshShape{1, 1, world, 1};
  const std::string m = what_of([&] { par::Mesh mesh(mine); });
  EXPECT_NE(m.find("ranks disagree on the mesh: world rank"), std::string::npos) << m;
  EXPECT_NE(m.find("every rank must build the same Mesh"), std::string::npos) << m;
  EXPECT_EQ(par::MpiCommunicator::instances_created(), before);
}

// ---- rank bootstrap ----------------------------------------------------------------------------------------

TEST(Runtime, InitIsIdempotentAndAgreesWithMpiAndTheLauncher) {
  const par::RuntimeInfo& a = par::init();
  const par::RuntimeInfo& b = par::init({.deadline = std::chrono::seconds(99)});  // options of later calls ignored
  EXPECT_EQ(&a, &b);
  EXPECT_TRUE(par::is_initialized());
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  EXPECT_EQ(a.rank, rank);
  EXPECT_EQ(a.world_size, size);
  EXPECT_EQ(a.deadline, std::chrono::seconds(5));
  EXPECT_TRUE(a.owns_mpi);
  EXPECT_GE(a.thread_level, MPI_THREAD_FUNNELED);
  // One node: local rank = rank. The launcher is Open MPI's mpirun, whose variables agree with MPI.
  EXPECT_EQ(a.local_size, size);
  EXPECT_EQ(a.local_rank, rank);
  EXPECT_EQ(a.env.launcher, "openmpi");
  EXPECT_EQ(a.env.rank, rank);
  EXPECT_EQ(a.env.size, size);
  EXPECT_EQ(a.env.local_rank, rank);
  EXPECT_FALSE(a.hostname.empty());
  if (a.device_count == 0)
    EXPECT_EQ(a.device, -1);
  else
    EXPECT_EQ(a.device, a.local_rank % a.device_count);
}

// Sets environment variables for one scope and restores them.
class ScopedEnv {
 public:
  void set(const char* name, const char* value) {
    const char* old = std::getenv(name);
    saved_.push_back({name, old ? std::optional<std::string>(old) : std::nullopt});
    if (value)
      setenv(name, value, 1);
    else
      unsetenv(name);
  }
  ~ScopedEnv() {
    for (auto it = saved_.rbegin(); it != saved_.rend(); ++it) {
      if (it->second)
        setenv(it->first.c_str(), it->second->c_str(), 1);
      else
        unsetenv(it->first.c_str());
    }
  }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

TEST(Runtime, LaunchEnvironmentOfSlurmPmiAndOpenMpi) {
  {
    ScopedEnv env;
    for (const char* v : {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "PMI_RANK",
                          "PMI_SIZE", "PMIX_RANK"})
      env.set(v, nullptr);
    env.set("SLURM_PROCID", "5");
    env.set("SLURM_NTASKS", "8");
    env.set("SLURM_LOCALID", "1");
    const par::LaunchEnv e = par::read_launch_env();
    EXPECT_EQ(e.launcher, "slurm");
    EXPECT_EQ(e.rank, 5);
    EXPECT_EQ(e.size, 8);
    EXPECT_EQ(e.local_rank, 1);
    env.set("PMI_RANK", "3");
    env.set("PMI_SIZE", "4");
    const par::LaunchEnv p = par::read_launch_env();
    EXPECT_EQ(p.launcher, "pmi");
    EXPECT_EQ(p.rank, 3);
    EXPECT_EQ(p.size, 4);
    EXPECT_EQ(p.slurm_procid, 5);  // still reported
    env.set("SLURM_NTASKS", "eight");
    EXPECT_NE(what_of([] { par::read_launch_env(); }).find("SLURM_NTASKS='eight' is not a non-negative integer"),
              std::string::npos);
  }
  const par::LaunchEnv restored = par::read_launch_env();
  EXPECT_EQ(restored.launcher, "openmpi");
}

}  // namespace
