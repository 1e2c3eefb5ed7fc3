#pragma once
// Test-only fault hooks for the reliability tests (tests/python/test_reliability.py, docs/RELIABILITY.md), read
// once at start from the environment variable NIBBLE_FAULT; unset in every real run. Values:
//   nan_grad:<param>:<first_step>:<steps>  after backward on steps first_step .. first_step + steps - 1 (1-based,
//                                          as the progress line counts), the gradient of parameter <param>
//                                          (its checkpoint name, e.g. layers.0.up.weight) becomes NaN on every
//                                          rank that holds it: a NaN/Inf gradient storm
//   nan_param:<param>:<step>               before step <step>'s forward, parameter <param> becomes NaN, so every
//                                          activation computed from it is NaN
//   file_size_limit:<bytes>                from the start of training, this rank's writes past <bytes> in one
//                                          file fail (RLIMIT_FSIZE; EFBIG, as a full disk fails with ENOSPC). Set
//                                          here, after MPI has started: `ulimit -f` before mpirun would also
//                                          limit Open MPI's own shared-memory files, and MPI_Init fails
// A malformed value stops the job at start, naming what is valid.
#include <cstdint>
#include <string>

#include "core/model/gpt.h"

namespace nibble::launch {

struct FaultPlan {
  enum class Kind { kNone, kNanGrad, kNanParam, kFileSizeLimit } kind = Kind::kNone;
  std::string param;
  int64_t first_step = 0;  // 1-based
  int64_t steps = 0;
  int64_t bytes = 0;  // kFileSizeLimit
};

// From NIBBLE_FAULT (Kind::kNone when unset); throws InvalidArgument for a malformed value or an unknown
// parameter name. A file-size limit takes effect here.
FaultPlan read_fault_plan(const core::model::Gpt& model);

// Step `step` (1-based): poisons what the plan names, if anything, and says so on stderr.
void inject_before_forward(const FaultPlan& plan, core::model::Gpt& model, int64_t step);
void inject_after_backward(const FaultPlan& plan, core::model::Gpt& model, int64_t step);

}  // namespace nibble::launch
