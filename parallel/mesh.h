#pragma once
// The device mesh: dims tp, cp, dp, pp with tp fastest (Megatron's order):
//   world rank = tp + t*(cp + c*(dp + d*pp))
// so a TP group is consecutive ranks (one node), and PP, the cheapest traffic, is outermost. Every group a
// rank needs is created up front, in one fixed order on every rank (GroupKind order), never lazily.
//
// The layout arithmetic (validate_mesh, coord_of, group_members, ...) is pure: it needs no MPI, so a launcher
// can check a configuration before any rank starts, and the tests compare real groups against it.
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "parallel/device_group_plan.h"
#include "parallel/communicator.h"

namespace nibble::parallel {

struct MeshShape {
  int tp = 1, cp = 1, dp = 1, pp = 1;
  int64_t size() const { return int64_t{tp} * cp * dp * pp; }
  std::string str() const;  // "tp=2 cp=1 dp=2 pp=1"
  friend bool operator==(const MeshShape&, const MeshShape&) = default;
};

struct MeshCoord {
  int tp = 0, cp = 0, dp = 0, pp = 0;
  friend bool operator==(const MeshCoord&, const MeshCoord&) = default;
};

// The model sizes the mesh must divide. 0 = not checked.
struct ModelShape {
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;  // GQA/MQA key-value heads (0: same as num_heads)
  int64_t hidden = 0;
  int64_t ffn_hidden = 0;
  int64_t vocab = 0;
  int64_t num_layers = 0;
  int64_t seq_len = 0;
  bool sequence_parallel = false;  // Megatron SP: the s/cp tokens of a rank are split again over tp
};

// The groups, in creation order. dp_cp reduces gradients (CP ranks see different tokens of the same
// samples); tp_dp_cp reduces FP8 amaxes (never across PP: stages hold different layers).
enum class GroupKind : uint8_t { kTp, kCp, kDp, kPp, kDpCp, kTpDpCp };
inline constexpr std::array<GroupKind, 6> kAllGroupKinds = {GroupKind::kTp, GroupKind::kCp,   GroupKind::kDp,
                                                            GroupKind::kPp, GroupKind::kDpCp, GroupKind::kTpDpCp};
const char* group_name(GroupKind kind);  // "tp", "cp", "dp", "pp", "dp_cp", "tp_dp_cp"
GroupKind parse_group_kind(const std::string& name);

// Throws InvalidArgument listing every constraint that fails, each naming the sizes involved, e.g.
// "tp=3 does not divide num_heads=8". Checks: dims >= 1; tp*cp*dp*pp == world_size; and for the model: tp
// divides num_heads, num_kv_heads, hidden, ffn_hidden and vocab; num_kv_heads divides num_heads; pp divides
// num_layers; 2*cp divides seq_len (load-balanced causal chunks); with sequence_parallel, tp divides seq_len/cp.
void validate_mesh(const MeshShape& shape, int64_t world_size, const ModelShape& model = {});

MeshCoord coord_of(const MeshShape& shape, int rank);
int rank_of(const MeshShape& shape, const MeshCoord& coord);
// World ranks of the group of `kind` that contains `rank`, ordered by group rank (tp fastest).
std::vector<int> group_members(const MeshShape& shape, GroupKind kind, int rank);
// Which group of `kind` holds `rank` (0 .. number of such groups - 1) and the rank's place in it.
int group_index(const MeshShape& shape, GroupKind kind, int rank);
int group_rank(const MeshShape& shape, GroupKind kind, int rank);

class MpiCommunicator;

// Makes one group's communicator on another backend from that group's MPI communicator; collective over the
// group. The NCCL backend's is nccl_groups() (parallel/nccl_communicator.h, library nibble_parallel_nccl).
using GroupFactory =
    std::function<std::unique_ptr<Communicator>(MpiCommunicator& group, const CommOptions& options)>;

class Mesh {
 public:
  // Collective over the world (nibble::parallel::init() first). Order of work: validate_mesh (local, before
  // anything is allocated); a deadline-bound all_gather proving every rank is present and asked for the same
  // shape; then one MPI_Comm_split per GroupKind, in kAllGroupKinds order. `options` default: the runtime's.
  explicit Mesh(const MeshShape& shape, const ModelShape& model = {});
  Mesh(const MeshShape& shape, const ModelShape& model, const CommOptions& options);
  // Device groups (NCCL): after the MPI groups exist, `device_groups` makes one communicator per group from its
  // MPI group, in kAllGroupKinds order on every rank, e.g. Mesh(shape, model, options, nccl_groups()). group()
  // and the named accessors then return these; host_group() keeps the MPI ones (CPU buffers, bootstrap).
  Mesh(const MeshShape& shape, const ModelShape& model, const CommOptions& options, const GroupFactory& device_groups);
  ~Mesh();
  Mesh(const Mesh&) = delete;
  Mesh& operator=(const Mesh&) = delete;

  const MeshShape& shape() const { return shape_; }
  const MeshCoord& coord() const { return coord_; }
  int rank() const { return rank_; }

  Communicator& group(GroupKind kind) const;
  Communicator& tp() const { return group(GroupKind::kTp); }
  Communicator& cp() const { return group(GroupKind::kCp); }
  Communicator& dp() const { return group(GroupKind::kDp); }
  Communicator& pp() const { return group(GroupKind::kPp); }
  Communicator& dp_cp() const { return group(GroupKind::kDpCp); }
  Communicator& tp_dp_cp() const { return group(GroupKind::kTpDpCp); }
  Communicator& host_group(GroupKind kind) const;  // the MPI group, whatever the backend
  const std::string& backend() const { return backend_; }  // "mpi", or the device groups' ("nccl")
  // With a device-group factory: which backend each group took for CUDA buffers, and why
  // (parallel/device_group_plan.h); without one, every plan is kNone.
  const DeviceGroupPlan& device_plan(GroupKind kind) const { return plans_[static_cast<size_t>(kind)]; }
  void set_deadline(std::chrono::milliseconds deadline);  // host and device groups

 private:
  MeshShape shape_;
  MeshCoord coord_;
  int rank_ = 0;
  std::string backend_ = "mpi";
  std::array<std::unique_ptr<MpiCommunicator>, kAllGroupKinds.size()> groups_;
  std::array<DeviceGroupPlan, kAllGroupKinds.size()> plans_;
  // Declared after groups_ so they are destroyed first: a device group was made from its MPI group.
  std::array<std::unique_ptr<Communicator>, kAllGroupKinds.size()> device_groups_;
};

}  // namespace nibble::parallel
