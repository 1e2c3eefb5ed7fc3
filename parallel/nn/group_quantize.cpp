#include "parallel/nn/group_quantize.h"

#include <cmath>
#include <vector>

#include "parallel/nn/torch_collectives.h"
#include "precision/error.h"

namespace nibble::parallel::nn {
namespace {

using precision::Scheme;

// Does the copy carry a per-tensor factor (FP8 scale or NVFP4 global amax)?
bool has_tensor_factor(const precision::QuantizeOptions& o) {
  return o.scheme == Scheme::kFP8Tensor || o.scheme == Scheme::kNVFP4 || o.scheme == Scheme::kNVFP4_2D;
}

bool is_fp4(const precision::QuantizeOptions& o) { return o.element.bits() <= 4; }

// Block length of a copy along its columns (for a columnwise copy: along the original rows).
int64_t block_cols(Scheme s) {
  switch (s) {
    case Scheme::kMXFP8:
    case Scheme::kMXFP4:
    case Scheme::kMXFP4Quest: return 32;
    case Scheme::kNVFP4:
    case Scheme::kNVFP4_2D:
    case Scheme::kFP8Block16: return 16;
    case Scheme::kFP8Block128:
    case Scheme::kFP8Block128x128: return 128;
    case Scheme::kFP8Tensor: return 1;
  }
  return 1;
}

struct Job {
  const core::OperandSpec* spec;
  bool rowwise, columnwise;
  precision::QuantizeOptions options;
};

// Rows appended to impose the group amax: one row, or a whole 16-row group where 16-row structure exists
// (2-D tiles, or blocks / RHT groups along the rows of the columnwise copy).
int64_t pad_rows_for(const precision::QuantizeOptions& o, int64_t rows, const std::string& name) {
  const bool row_blocks = o.scheme == Scheme::kNVFP4_2D || (o.columnwise && o.scheme == Scheme::kNVFP4);
  if (!row_blocks) return 1;
  if (rows % 16 != 0)
    throw InvalidArgument(name + ": under tensor parallelism an nvfp4 tensor whose blocks run along the rows needs "
                          "a row count divisible by 16 (to impose the group amax), got " + std::to_string(rows));
  return 16;
}

std::shared_ptr<core::QuantizedTensor> quantize_padded(const torch::Tensor& t2d, const precision::QuantizeOptions& o,
                                                       float pad_value, int64_t pad_rows, const std::string& name) {
  const int64_t rows = t2d.size(0), cols = t2d.size(1);
  torch::Tensor pad = torch::zeros({pad_rows, cols}, t2d.options());
  pad.index_put_({0, 0}, pad_value);
  auto q = std::make_shared<core::QuantizedTensor>(core::quantize(torch::cat({t2d, pad}), o, name));
  if (q->rowwise) {
    core::QuantizedCopyTensor& c = *q->rowwise;
    c.data = c.data.narrow(0, 0, rows).contiguous();
    if (c.scale.size(0) == rows + pad_rows) c.scale = c.scale.narrow(0, 0, rows).contiguous();
    c.rows = rows;
  }
  if (q->columnwise) {
    core::QuantizedCopyTensor& c = *q->columnwise;
    const precision::CopyLayout L = precision::copy_layout(o, cols, rows);
    c.data = c.data.narrow(1, 0, L.data_row_bytes).contiguous();
    if (o.scheme != Scheme::kFP8Tensor) c.scale = c.scale.narrow(1, 0, L.scale_cols).contiguous();
    c.cols = rows;
  }
  q->shape = {rows, cols};
  return q;
}

float local_amax(const torch::Tensor& t2d, const Job& job, const std::string& name) {
  if (t2d.numel() == 0) return 0.0f;
  if (job.columnwise && job.options.rht) {
    // The columnwise NVFP4 copy's global amax is taken after the RHT: quantize once to learn it.
    precision::QuantizeOptions o = job.options;
    o.rowwise = false;
    const core::QuantizedTensor q = core::quantize(t2d, o, name);
    return q.columnwise->global_amax.item<float>();
  }
  return t2d.abs().max().to(torch::kFloat32).item<float>();
}

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
  // Spelled out so that pad rows (quantize_padded) leave the real rows' stochastic-rounding bits alone.
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
  std::vector<float> group(jobs.size(), -1.0f), mine(jobs.size(), -1.0f);
  bool reduce = false;
  // A delayed scale is fixed before quantizing: nothing to reduce for it here.
  auto reduced = [&](const Job& j) { return has_tensor_factor(j.options) && !j.spec->delayed; };
  for (const Job& j : jobs) reduce = reduce || (comm && comm->size() > 1 && reduced(j));
  if (fail_together && comm && comm->size() > 1 && !jobs.empty()) reduce = true;
  if (reduce) {
    // One all-reduce(max): the amaxes of the copies with a per-tensor factor, then a NaN flag (so a NaN on one
    // rank fails every rank at the same point instead of desynchronising the group).
    torch::Tensor buf = torch::zeros({static_cast<int64_t>(jobs.size()) + 1}, torch::kFloat32);
    bool nan = false;
    for (size_t i = 0; i < jobs.size(); ++i) {
      if (!reduced(jobs[i])) {
        nan = nan || torch::isnan(t2d).any().item<bool>();
        continue;
      }
      mine[i] = local_amax(t2d, jobs[i], name);
      nan = nan || std::isnan(mine[i]);
      buf[static_cast<int64_t>(i)] = std::isnan(mine[i]) ? 0.0f : mine[i];
    }
    buf[static_cast<int64_t>(jobs.size())] = nan ? 1.0f : 0.0f;
    all_reduce_(buf, ReduceOp::kMax, *comm, name + " amax");
    if (buf[static_cast<int64_t>(jobs.size())].item<float>() > 0.0f)
      throw Error(name + ": NaN in this tensor on " + std::string(nan ? "this rank" : "another rank") + " of " +
                  comm->describe() + " (found while reducing its amax)");
    for (size_t i = 0; i < jobs.size(); ++i)
      if (reduced(jobs[i])) group[i] = buf[static_cast<int64_t>(i)].item<float>();
  }
  QuantizedCopies out;
  for (size_t i = 0; i < jobs.size(); ++i) {
    Job& j = jobs[i];
    j.options.sr_index = place;
    std::shared_ptr<core::QuantizedTensor> q;
    if (group[i] > mine[i]) {
      const float value = j.columnwise && j.options.rht ? 4.0f * group[i] : group[i];
      q = quantize_padded(t2d, j.options, value, pad_rows_for(j.options, t2d.size(0), name), name);
    } else {
      q = std::make_shared<core::QuantizedTensor>(core::quantize(t2d, j.options, name));
    }
    if (j.spec->delayed) ds->record(q->input_amax);
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
