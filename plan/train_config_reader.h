#pragma once
// Reads the model and training description from a nibble-train config file: the same keys, defaults and
// meaning as launch/train_config.cpp ([model] vocab, hidden, layers, heads, ffn_hidden, seq_len, recipe,
// bf16_first, bf16_last, lm_head_recipe, tie_embeddings; [train] global_batch, micro_batch; [optim] optimizer,
// state, zero, zero_fp8_all_gather; [parallel] sequence_parallel, pp_schedule, virtual_stages).
//
// Why not link launch/: its config code brings the whole trainer (torch, MPI, the data pipeline) and checks
// that the token files exist; the planner runs on a laptop for a cluster that does not exist yet. So it reads
// just these keys with toml++ and leaves every other key alone (nibble-train's own validation stays the
// authority on a config; `nibble-train keys` lists them all).
#include <string>

#include "plan/model_spec.h"

namespace nibble::plan {

struct PlanInput {
  ModelSpec model;
  TrainingSpec training;
};

// nibble's Llama-style GPT (SwiGLU, RMSNorm, fused attention, no dropout) with nibble-train's defaults.
PlanInput nibble_defaults();

PlanInput read_train_config_text(const std::string& toml_text, const std::string& source);
PlanInput read_train_config(const std::string& path);

}  // namespace nibble::plan
