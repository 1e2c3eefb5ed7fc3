#pragma once
// Published cluster runs the planner is validated against, with the model, batch and layout each paper gives.
//
// Narayanan et al. 2021, "Efficient Large-Scale Language Model Training on GPU Clusters Using Megatron-LM"
// (SC'21, arXiv:2104.04473), Table 1: weak scaling of GPT models on Selene (DGX A100 80GB), vocabulary 51,200,
// sequence 2,048, mixed precision, full activation recomputation; achieved teraFLOP/s per GPU counted with
// Eq. 3 (the 96 form, plan/flops.h). Neither the micro-batch nor the pipeline schedule of each row is in the
// table: we take micro-batch 1 (the paper's Table 2 PTD-P runs use 1) and the plain 1F1B schedule.
//
// Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models" (MLSys'23,
// arXiv:2205.05198), Table 3 (models: tensor-parallel 8, pipeline as listed, no data parallelism) and Table 5
// (end-to-end iteration time, "full recompute" vs "present work" = sequence parallelism + selective
// recomputation). The global batch of each row (4, 64, 280, 512) is the one that makes the paper's own MFU
// column (41.5, 51.4, 56.0, 56.3 %) consistent with its iteration time and Eq. 3's 72 form; micro-batch 1.
//
// Both papers used Megatron's GPT layer (LayerNorm, GELU MLP of 4h, materialised softmax with dropout) in
// 16-bit; the 2021 code all-reduced FP16 gradients after the backward, without overlap.
#include <string>
#include <vector>

#include "plan/layout.h"
#include "plan/model_spec.h"

namespace nibble::plan {

struct PublishedRun {
  std::string source;  // "Narayanan 2021 Table 1" | "Korthikanti 2022 Table 5"
  std::string name;    // "1T", "530B full recompute", ...
  ModelSpec model;
  TrainingSpec training;
  Layout layout;
  // The published figure and its unit: per-GPU teraFLOP/s (Narayanan) or iteration seconds (Korthikanti).
  double published = 0;
  bool is_seconds = false;
};

std::vector<PublishedRun> narayanan_2021_table1();
std::vector<PublishedRun> korthikanti_2022_table5();
std::vector<PublishedRun> all_published_runs();

// Megatron's GPT layer with these sizes (vocabulary 51,200, MLP 4h, materialised attention with dropout).
ModelSpec megatron_gpt(int64_t layers, int64_t hidden, int64_t heads, int64_t seq_len = 2048);

}  // namespace nibble::plan
