// Mesh layout arithmetic, validation, and group creation (see parallel/mesh.h).
#include "parallel/mesh.h"

#include <span>
#include <sstream>

#include "parallel/mpi_communicator.h"
#include "parallel/runtime.h"
#include "precision/error.h"

namespace nibble::parallel {
namespace {

constexpr int kDims = 4;  // tp, cp, dp, pp: fastest first

std::array<int, kDims> sizes_of(const MeshShape& s) {
  return {s.tp, s.cp, s.dp, s.pp};
}
std::array<int, kDims> coords_of(const MeshCoord& c) {
  return {c.tp, c.cp, c.dp, c.pp};
}

std::array<bool, kDims> mask_of(GroupKind kind) {
  switch (kind) {
    case GroupKind::kTp:
      return {true, false, false, false};
    case GroupKind::kCp:
      return {false, true, false, false};
    case GroupKind::kDp:
      return {false, false, true, false};
    case GroupKind::kPp:
      return {false, false, false, true};
    case GroupKind::kDpCp:
      return {false, true, true, false};
    case GroupKind::kTpDpCp:
      return {true, true, true, false};
  }
  return {};
}

// Mixed-radix number of the coordinates selected by `select` (first dim fastest).
int mixed_radix(const std::array<int, kDims>& sizes, const std::array<int, kDims>& coords,
                const std::array<bool, kDims>& select) {
  int value = 0, stride = 1;
  for (int d = 0; d < kDims; ++d) {
    if (!select[d]) continue;
    value += coords[d] * stride;
    stride *= sizes[d];
  }
  return value;
}

void check_rank(const MeshShape& shape, int rank) {
  if (shape.tp < 1 || shape.cp < 1 || shape.dp < 1 || shape.pp < 1)
    throw InvalidArgument("nibble.parallel: mesh " + shape.str() + " has a dimension below 1");
  if (rank < 0 || rank >= shape.size())
    throw InvalidArgument("nibble.parallel: rank " + std::to_string(rank) + " is outside mesh " + shape.str() +
                          "; valid: 0.." + std::to_string(shape.size() - 1));
}

}  // namespace

std::string MeshShape::str() const {
  return "tp=" + std::to_string(tp) + " cp=" + std::to_string(cp) + " dp=" + std::to_string(dp) +
         " pp=" + std::to_string(pp);
}

const char* group_name(GroupKind kind) {
  switch (kind) {
    case GroupKind::kTp:
      return "tp";
    case GroupKind::kCp:
      return "cp";
    case GroupKind::kDp:
      return "dp";
    case GroupKind::kPp:
      return "pp";
    case GroupKind::kDpCp:
      return "dp_cp";
    case GroupKind::kTpDpCp:
      return "tp_dp_cp";
  }
  return "?";
}

GroupKind parse_group_kind(const std::string& name) {
  for (GroupKind k : kAllGroupKinds)
    if (name == group_name(k)) return k;
  throw InvalidArgument("nibble.parallel: unknown group '" + name + "'; valid: tp, cp, dp, pp, dp_cp, tp_dp_cp");
}

void validate_mesh(const MeshShape& shape, int64_t world_size, const ModelShape& model) {
  std::vector<std::string> errors;
  const auto need = [&errors](bool ok, const std::string& message) {
    if (!ok) errors.push_back(message);
  };
  const auto s = [](int64_t v) { return std::to_string(v); };
  const std::array<std::pair<const char*, int>, kDims> dims = {
      {{"tp", shape.tp}, {"cp", shape.cp}, {"dp", shape.dp}, {"pp", shape.pp}}};
  bool dims_ok = true;
  for (const auto& [name, v] : dims) {
    if (v < 1) {
      errors.push_back(std::string(name) + "=" + s(v) + " must be at least 1");
      dims_ok = false;
    }
  }
  if (dims_ok && shape.size() != world_size) {
    std::string m = "tp*cp*dp*pp = " + s(shape.tp) + "*" + s(shape.cp) + "*" + s(shape.dp) + "*" + s(shape.pp) + " = " +
                    s(shape.size()) + " does not equal the world size " + s(world_size);
    const int64_t others = int64_t{shape.tp} * shape.cp * shape.pp;
    if (world_size > 0 && world_size % others == 0) m += " (dp=" + s(world_size / others) + " would fit)";
    errors.push_back(m);
  }
  const std::array<std::pair<const char*, int64_t>, 7> sizes = {{{"num_heads", model.num_heads},
                                                                 {"num_kv_heads", model.num_kv_heads},
                                                                 {"hidden", model.hidden},
                                                                 {"ffn_hidden", model.ffn_hidden},
                                                                 {"vocab", model.vocab},
                                                                 {"num_layers", model.num_layers},
                                                                 {"seq_len", model.seq_len}}};
  for (const auto& [name, v] : sizes) need(v >= 0, std::string(name) + "=" + s(v) + " must be >= 0 (0 = not checked)");
  if (dims_ok) {
    const int64_t tp = shape.tp, cp = shape.cp, pp = shape.pp;
    if (model.num_heads > 0)
      need(model.num_heads % tp == 0, "tp=" + s(tp) + " does not divide num_heads=" + s(model.num_heads));
    if (model.num_kv_heads > 0) {
      need(model.num_kv_heads % tp == 0, "tp=" + s(tp) + " does not divide num_kv_heads=" + s(model.num_kv_heads) +
                                             " (each tp rank holds whole key-value heads)");
      if (model.num_heads > 0)
        need(model.num_heads % model.num_kv_heads == 0,
             "num_kv_heads=" + s(model.num_kv_heads) + " does not divide num_heads=" + s(model.num_heads));
    }
    if (model.hidden > 0) {
      need(model.hidden % tp == 0, "tp=" + s(tp) + " does not divide hidden=" + s(model.hidden));
      if (model.num_heads > 0)
        need(model.hidden % model.num_heads == 0,
             "num_heads=" + s(model.num_heads) + " does not divide hidden=" + s(model.hidden) + " (head dimension)");
    }
    if (model.ffn_hidden > 0)
      need(model.ffn_hidden % tp == 0, "tp=" + s(tp) + " does not divide ffn_hidden=" + s(model.ffn_hidden));
    if (model.vocab > 0)
      need(model.vocab % tp == 0, "tp=" + s(tp) + " does not divide vocab=" + s(model.vocab) +
                                      " (pad the vocabulary to a multiple of tp, e.g. " +
                                      s((model.vocab + tp - 1) / tp * tp) + ")");
    if (model.num_layers > 0)
      need(model.num_layers % pp == 0, "pp=" + s(pp) + " does not divide num_layers=" + s(model.num_layers) +
                                           " (every stage holds the same number of layers)");
    if (model.seq_len > 0 && cp > 1)
      need(model.seq_len % (2 * cp) == 0, "cp=" + s(cp) + " needs seq_len divisible by 2*cp=" + s(2 * cp) +
                                              " (load-balanced causal chunks), got seq_len=" + s(model.seq_len));
    if (model.seq_len > 0 && model.sequence_parallel && model.seq_len % cp == 0)
      need((model.seq_len / cp) % tp == 0, "sequence parallel needs tp=" + s(tp) +
                                               " to divide the tokens of a cp rank, seq_len/cp = " + s(model.seq_len) +
                                               "/" + s(cp) + " = " + s(model.seq_len / cp));
  }
  if (errors.empty()) return;
  std::string message = "nibble.parallel: invalid mesh " + shape.str() + " for world size " + s(world_size) + ": ";
  for (size_t i = 0; i < errors.size(); ++i) message += (i ? "; " : "") + errors[i];
  throw InvalidArgument(message);
}

MeshCoord coord_of(const MeshShape& shape, int rank) {
  check_rank(shape, rank);
  MeshCoord c;
  c.tp = rank % shape.tp;
  rank /= shape.tp;
  c.cp = rank % shape.cp;
  rank /= shape.cp;
  c.dp = rank % shape.dp;
  c.pp = rank / shape.dp;
  return c;
}

int rank_of(const MeshShape& shape, const MeshCoord& c) {
  const auto sizes = sizes_of(shape), coords = coords_of(c);
  for (int d = 0; d < kDims; ++d)
    if (coords[d] < 0 || coords[d] >= sizes[d])
      throw InvalidArgument("nibble.parallel: coordinate " + std::to_string(coords[d]) + " of dimension " +
                            std::to_string(d) + " is outside mesh " + shape.str());
  return c.tp + shape.tp * (c.cp + shape.cp * (c.dp + shape.dp * c.pp));
}

std::vector<int> group_members(const MeshShape& shape, GroupKind kind, int rank) {
  const auto sizes = sizes_of(shape);
  const auto mask = mask_of(kind);
  auto coords = coords_of(coord_of(shape, rank));
  int count = 1;
  for (int d = 0; d < kDims; ++d)
    if (mask[d]) count *= sizes[d];
  std::vector<int> members;
  members.reserve(static_cast<size_t>(count));
  for (int k = 0; k < count; ++k) {
    int rest = k;
    for (int d = 0; d < kDims; ++d) {
      if (!mask[d]) continue;
      coords[d] = rest % sizes[d];
      rest /= sizes[d];
    }
    members.push_back(rank_of(shape, MeshCoord{coords[0], coords[1], coords[2], coords[3]}));
  }
  return members;
}

int group_index(const MeshShape& shape, GroupKind kind, int rank) {
  auto mask = mask_of(kind);
  for (bool& m : mask) m = !m;
  return mixed_radix(sizes_of(shape), coords_of(coord_of(shape, rank)), mask);
}

int group_rank(const MeshShape& shape, GroupKind kind, int rank) {
  return mixed_radix(sizes_of(shape), coords_of(coord_of(shape, rank)), mask_of(kind));
}

// ---- Mesh ---------------------------------------------------------------------------------------------------

Mesh::Mesh(const MeshShape& shape, const ModelShape& model)
    : Mesh(shape, model, CommOptions{info().deadline, info().liveness_probe}) {}

Mesh::Mesh(const MeshShape& shape, const ModelShape& model, const CommOptions& options) : shape_(shape) {
  Communicator& world_group = world();
  validate_mesh(shape, world_group.size(), model);  // before anything is allocated or sent
  rank_ = world_group.rank();
  coord_ = coord_of(shape, rank_);

  // Every rank must be here and agree on the shape: a rank with another config would otherwise split into
  // groups nobody else forms, and MPI_Comm_split (blocking, no deadline) would wait forever.
  const std::array<int32_t, kDims> mine = {shape.tp, shape.cp, shape.dp, shape.pp};
  std::vector<int32_t> all(static_cast<size_t>(kDims) * static_cast<size_t>(world_group.size()));
  world_group.all_gather<int32_t>(std::span<const int32_t>(mine), std::span<int32_t>(all));
  for (int r = 0; r < world_group.size(); ++r) {
    const int32_t* o = all.data() + static_cast<size_t>(r) * kDims;
    const MeshShape theirs{o[0], o[1], o[2], o[3]};
    if (!(theirs == shape))
      throw InvalidArgument("nibble.parallel: ranks disagree on the mesh: world rank " + std::to_string(r) +
                            " asked for " + theirs.str() + " but world rank " + std::to_string(rank_) + " asked for " +
                            shape.str() + "; every rank must build the same Mesh");
  }

  const MPI_Comm parent = dynamic_cast<MpiCommunicator&>(world_group).handle();
  for (GroupKind kind : kAllGroupKinds) {
    groups_[static_cast<size_t>(kind)] = MpiCommunicator::split(
        parent, group_index(shape, kind, rank_), group_rank(shape, kind, rank_), group_name(kind), options);
  }
}

Mesh::Mesh(const MeshShape& shape, const ModelShape& model, const CommOptions& options,
           const GroupFactory& device_groups)
    : Mesh(shape, model, options) {
  if (!device_groups) throw InvalidArgument("nibble.parallel: Mesh was given an empty device-group factory");
  // Where every rank runs decides which groups the device backend can serve (parallel/device_group_plan.h): one
  // all-gather of (node, device) over the world, then the same plan on every rank.
  Communicator& world_group = world();
  const RankPlace here = place_of_this_rank(info().hostname, info().device);
  const int64_t mine[2] = {static_cast<int64_t>(here.node), here.device};
  std::vector<int64_t> all(2 * static_cast<size_t>(world_group.size()));
  world_group.all_gather<int64_t>(std::span<const int64_t>(mine, 2), std::span<int64_t>(all));
  std::vector<RankPlace> places(static_cast<size_t>(world_group.size()));
  for (size_t r = 0; r < places.size(); ++r)
    places[r] = {static_cast<uint64_t>(all[2 * r]), static_cast<int>(all[2 * r + 1])};
  // Every rank walks the kinds in the same order, so each group's members create its communicator together.
  for (GroupKind kind : kAllGroupKinds) {
    const size_t i = static_cast<size_t>(kind);
    plans_[i] = plan_device_group(groups_[i]->members(), places);
    if (plans_[i].backend != DeviceGroupBackend::kNccl) continue;  // the MPI group serves it (host-staged)
    device_groups_[i] = device_groups(*groups_[i], options);
    if (!device_groups_[i])
      throw Error(std::string("nibble.parallel: the device-group factory returned no communicator for group '") +
                  group_name(kind) + "'");
    backend_ = device_groups_[i]->backend();
  }
}

Mesh::~Mesh() = default;

Communicator& Mesh::group(GroupKind kind) const {
  const size_t i = static_cast<size_t>(kind);
  if (device_groups_[i]) return *device_groups_[i];
  return *groups_[i];
}

Communicator& Mesh::host_group(GroupKind kind) const {
  return *groups_[static_cast<size_t>(kind)];
}

void Mesh::set_deadline(std::chrono::milliseconds deadline) {
  for (auto& g : groups_) g->set_deadline(deadline);
  for (auto& g : device_groups_)
    if (g) g->set_deadline(deadline);
}

}  // namespace nibble::parallel
