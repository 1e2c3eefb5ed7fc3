#pragma once
// Delayed scaling across ranks (NUMERICS.md): every rank that quantizes the same logical tensor must use the
// same scale, so this step's amaxes are max-reduced over the TP x DP x CP group (never across pipeline
// stages, which hold different layers) once per step, in one collective for all tensors, before each
// DelayedScaling::update(). Every rank of the group passes its states in the same order.
#include <vector>

#include "parallel/communicator.h"
#include "precision/delayed_scaling.h"

namespace nibble::parallel::nn {

// Reads each state's pending amax (history()[0], the staging slot record() folds into), max-reduces them all
// in one all_reduce over `group` (normally Mesh::tp_dp_cp()), and folds the group's maxima back with
// record(). (A pending amax is never NaN: record() refuses NaN. An Inf on one rank becomes everyone's, and
// update() then keeps the old scale on every rank alike.)
void reduce_pending_amaxes(const std::vector<precision::DelayedScaling*>& states, Communicator& group);

}  // namespace nibble::parallel::nn
