#include "parallel/nn/group_quantize.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "parallel/nn/torch_collectives.h"
#include "precision/error.h"
#include "precision/scheme_facts.h"

namespace nibble::parallel::nn {
namespace {

using precision::Scheme;

// Does the copy carry a per-tensor factor (FP8 scale or NVFP4 global amax)?
bool has_tensor_factor(const precision::QuantizeOptions& o) {
  return precision::scheme_facts(o.scheme).tensor_factor;
}

bool is_fp4(const precision::QuantizeOptions& o) { return o.element.bits() <= 4; }

// Block length of a copy along its columns (for a columnwise copy: along the original rows); 1 for a
// per-tensor scale, which puts no constraint on a split.
int64_t block_cols(Scheme s) {
  return std::max(1, precision::scheme_facts(s).block_cols);
}

struct Job {
  const core::OperandSpec* spec;
  bool rowwise, columnwise;
  precision::QuantizeOptions options;
};

// One copy of `local` gathered over the rows; `col_from_row`: the columnwise copy is the transposed rowwise
// codes (per-tensor FP8, one scale).
std::shared_ptr<core::QuantizedTensor> gather_one(const core::QuantizedTensor& local, Communicator& comm,
                                                  const std::string& name) {
  auto out = std::make_shared<core::QuantizedTensor>(local);
  const auto& o = local.options;
  const int64_t size = comm.size();
  if (local.rowwise) {
    core::QuantizedCopyTensor& c = *out->rowwise;
    const int64_t rows = local.rowwise->rows;
    if (c.mask.defined()) throw InvalidArgument(name + ": QuEST copies cannot be gathered");
    c.data = all_gather_dim0(c.data, comm, name + " rowwise codes");
    if (o.scheme != Scheme::kFP8Tensor) {
      if (c.scale.size(0) != rows)
        throw InvalidArgument(name + ": " + precision::scheme_name(o.scheme) +
                              " has 2-D scale tiles; its rows cannot be gathered");
      c.scale = all_gather_dim0(c.scale, comm, name + " rowwise scales");
    }
    c.rows = rows * size;
  }
  if (local.columnwise) {
    core::QuantizedCopyTensor& c = *out->columnwise;
    const int64_t rows = local.columnwise->cols;  // the original rows run along the columnwise copy's columns
    if (o.scheme == Scheme::kFP8Tensor && out->rowwise) {
      c.data = out->rowwise->data.t().contiguous();
    } else {
      const int64_t block = block_cols(o.scheme);
      if (rows % block != 0 || (is_fp4(o) && rows % 2 != 0))
        throw InvalidArgument(name + ": the columnwise " + precision::scheme_name(o.scheme) + " copy has blocks of " +
                              std::to_string(block) + " along the tokens; this rank's " + std::to_string(rows) +
                              " tokens are not a whole number of blocks, so the gathered blocks would differ from "
                              "the unsharded tensor's (use a token count per rank divisible by " +
                              std::to_string(block) + ")");
      // [K, b] per rank -> [size*K, b] -> [K, size*b]: rank-major blocks, interleaved locally.
      auto interleave = [&](const torch::Tensor& t, const char* what) {
        const torch::Tensor g = all_gather_dim0(t, comm, name + " columnwise " + what);
        return g.reshape({size, t.size(0), t.size(1)}).permute({1, 0, 2}).reshape({t.size(0), size * t.size(1)});
      };
      c.data = interleave(c.data, "codes").contiguous();
      if (o.scheme != Scheme::kFP8Tensor) c.scale = interleave(c.scale, "scales").contiguous();
    }
    c.cols = rows * size;
  }
  if (!out->shape.empty()) out->shape[0] *= size;
  return out;
}

}  // namespace

bool gathers_exactly(const core::OperandSpec* row_spec, const core::OperandSpec* col_spec, int64_t rows,
                     std::string* why) {
  auto no = [&](const std::string& reason) {
    if (why) *why = reason;
    return false;
  };
  for (const core::OperandSpec* s : {row_spec, col_spec}) {
    if (!s || !s->quantized) continue;
    const precision::QuantizeOptions& o = s->options;
    const std::string scheme = precision::scheme_name(o.scheme);
    if (o.scheme == Scheme::kMXFP4Quest) return no("QuEST copies carry clip masks");
    if (o.scheme == Scheme::kNVFP4_2D || o.scheme == Scheme::kFP8Block128x128)
      return no(scheme + " has 2-D tiles across the rows");
  }
  if (col_spec && col_spec->quantized && col_spec->options.scheme != Scheme::kFP8Tensor) {
    const int64_t block = block_cols(col_spec->options.scheme);
    if (rows % block != 0 || (is_fp4(col_spec->options) && rows % 2 != 0))
      return no("the columnwise " + precision::scheme_name(col_spec->options.scheme) + " copy has blocks of " +
                std::to_string(block) + " along the rows and a rank holds " + std::to_string(rows) + " rows");
  }
  return true;
}

int64_t quantized_gather_bytes(const core::OperandSpec* row_spec, const core::OperandSpec* col_spec, int64_t rows,
                               int64_t cols) {
  const bool row = row_spec && row_spec->quantized, col = col_spec && col_spec->quantized;
  // One copy as gather_one sends it: its codes, and its block scales unless the scale is per tensor.
  auto copy_bytes = [](const precision::QuantizeOptions& o, int64_t r, int64_t c) {
    const precision::CopyLayout L = precision::copy_layout(o, r, c);
    int64_t bytes = L.rows * L.data_row_bytes;
    if (o.scheme != Scheme::kFP8Tensor)
      bytes += L.scale_rows * L.scale_cols * (L.scale_storage == precision::ScaleStorage::kFloat32 ? 4 : 1);
    return bytes;
  };
  int64_t bytes = 0;
  if (row) bytes += copy_bytes(row_spec->options, rows, cols);
  // A per-tensor FP8 columnwise copy made in the same pass is the transposed rowwise codes: not sent.
  const bool col_from_row =
      row && col && same_quantization(*row_spec, *col_spec) && col_spec->options.scheme == Scheme::kFP8Tensor;
  if (col && !col_from_row) bytes += copy_bytes(col_spec->options, cols, rows);
  return bytes;
}

QuantizedCopies quantize_with_group_amax(const torch::Tensor& t2d, const core::OperandSpec* row_spec,
                                         const core::OperandSpec* col_spec, Communicator* comm,
                                         core::LinearState& state, const std::string& name,
                                         precision::DelayedScaling* ds, bool fail_together,
                                         const precision::SrIndexMap& sr_index) {
  const bool row = row_spec && row_spec->quantized, col = col_spec && col_spec->quantized;
  // The place of t2d in the tensor its stochastic-rounding bits are keyed by, spelled out.
  precision::SrIndexMap place = sr_index;
  if (place.full_rows == 0) place.full_rows = t2d.size(0);
  if (place.full_cols == 0) place.full_cols = t2d.size(1);
  std::vector<Job> jobs;
  if (row && col && same_quantization(*row_spec, *col_spec)) {
    jobs.push_back({row_spec, true, true, core::operand_options(*row_spec, true, true, state, ds, name)});
  } else {
    if (row) jobs.push_back({row_spec, true, false, core::operand_options(*row_spec, true, false, state, ds, name)});
    if (col) jobs.push_back({col_spec, false, true, core::operand_options(*col_spec, false, true, state, ds, name)});
  }
  // Per job, the group's amax of the input (its rowwise copy, or a columnwise copy without RHT) and after the
  // RHT (an RHT'd columnwise copy); -1: not reduced.
  std::vector<precision::TensorAmax> group(jobs.size(), precision::TensorAmax{-1.0f, -1.0f, false});
  bool reduce = false;
  // A delayed scale is fixed before quantizing: nothing to reduce for it here.
  auto reduced = [&](const Job& j) { return has_tensor_factor(j.options) && !j.spec->delayed; };
  auto wants_amax = [](const Job& j) { return j.rowwise || !j.options.rht; };
  auto wants_rht_amax = [](const Job& j) { return j.columnwise && j.options.rht; };
  for (const Job& j : jobs) reduce = reduce || (comm && comm->size() > 1 && reduced(j));
  if (fail_together && comm && comm->size() > 1 && !jobs.empty()) reduce = true;
  if (reduce) {
    // One all-reduce(max) of the amaxes the copies' per-tensor factors need, then a NaN flag (so a NaN on one
    // rank fails every rank at the same point instead of desynchronising the group).
    std::vector<float> mine;
    bool nan = false;
    for (const Job& j : jobs) {
      if (!reduced(j)) {
        nan = nan || torch::isnan(t2d).any().item<bool>();
        continue;
      }
      const precision::TensorAmax a = t2d.numel() == 0
                                          ? precision::TensorAmax{}
                                          : core::tensor_amax(t2d, wants_rht_amax(j), j.options.rht_seed, name);
      nan = nan || a.nan;
      if (wants_amax(j)) mine.push_back(a.nan ? 0.0f : a.amax);
      if (wants_rht_amax(j)) mine.push_back(a.nan ? 0.0f : a.rht_amax);
    }
    mine.push_back(nan ? 1.0f : 0.0f);
    torch::Tensor buf = torch::tensor(mine, torch::kFloat32);
    all_reduce_(buf, ReduceOp::kMax, *comm, name + " amax");
    const float* g = buf.data_ptr<float>();
    if (g[mine.size() - 1] > 0.0f)
      throw Error(name + ": NaN in this tensor on " + std::string(nan ? "this rank" : "another rank") + " of " +
                  comm->describe() + " (found while reducing its amax)");
    for (size_t i = 0; i < jobs.size(); ++i) {
      if (!reduced(jobs[i])) continue;
      if (wants_amax(jobs[i])) group[i].amax = *g++;
      if (wants_rht_amax(jobs[i])) group[i].rht_amax = *g++;
    }
  }
  QuantizedCopies out;
  for (size_t i = 0; i < jobs.size(); ++i) {
    Job& j = jobs[i];
    j.options.sr_index = place;
    // The group's amaxes set the per-tensor factors (precision::QuantizeOptions::group_amax): every rank
    // quantizes with the scales of the whole tensor.
    if (group[i].amax >= 0.0f) j.options.group_amax = group[i].amax;
    if (group[i].rht_amax >= 0.0f) j.options.group_rht_amax = group[i].rht_amax;
    auto q = std::make_shared<core::QuantizedTensor>(core::quantize(t2d, j.options, name));
    if (j.spec->delayed) ds->record(q->input_amax);
    core::record_operand_stats(state, *j.spec, t2d, *q);
    if (j.rowwise) out.row = q;
    if (j.columnwise) out.col = q;
  }
  return out;
}

precision::SrIndexMap row_slice_of(int64_t rows, int64_t cols, int rank, int size) {
  return {rows * size, cols, rows * rank, 0};
}

precision::SrIndexMap col_slice_of(int64_t rows, int64_t cols, int rank, int size) {
  return {rows, cols * size, 0, cols * rank};
}

QuantizedCopies all_gather_rows(const QuantizedCopies& local, Communicator& comm, const std::string& name) {
  QuantizedCopies out;
  if (comm.size() == 1) return local;
  if (local.row) out.row = gather_one(*local.row, comm, name);
  if (local.col) out.col = local.col == local.row ? out.row : gather_one(*local.col, comm, name);
  return out;
}

}  // namespace nibble::parallel::nn
