// The published rows (see plan/published_runs.h for sources and assumptions).
#include "plan/published_runs.h"

namespace nibble::plan {

ModelSpec megatron_gpt(int64_t layers, int64_t hidden, int64_t heads, int64_t seq_len) {
  ModelSpec m;
  m.layers = layers;
  m.hidden = hidden;
  m.heads = heads;
  m.ffn = 4 * hidden;
  m.vocab = 51200;
  m.seq_len = seq_len;
  m.tied_embeddings = true;  // Megatron's GPT shares the input embedding with the output layer
  m.mlp = MlpKind::kGelu;
  m.attention = AttentionKind::kMaterialized;
  m.dropout = true;
  m.activation_bytes = 2;  // 16-bit activations: Korthikanti et al.'s 34sbh + 5as^2b
  return m;
}

std::vector<PublishedRun> narayanan_2021_table1() {
  struct Row {
    const char* name;
    int64_t heads, hidden, layers;
    int tp, pp, gpus;
    int64_t batch;
    double tflops_per_gpu;
  };
  // Table 1 of arXiv:2104.04473 (params, heads, hidden, layers, t, p, GPUs, batch, achieved TFLOP/s per GPU).
  const Row rows[] = {
      {"1.7B", 24, 2304, 24, 1, 1, 32, 512, 137},       {"3.6B", 32, 3072, 30, 2, 1, 64, 512, 138},
      {"7.5B", 32, 4096, 36, 4, 1, 128, 512, 142},      {"18.4B", 48, 6144, 40, 8, 1, 256, 1024, 135},
      {"39.1B", 64, 8192, 48, 8, 2, 512, 1536, 138},    {"76.1B", 80, 10240, 60, 8, 4, 1024, 1792, 140},
      {"145.6B", 96, 12288, 80, 8, 8, 1536, 2304, 148}, {"310.1B", 128, 16384, 96, 8, 16, 1920, 2160, 155},
      {"529.6B", 128, 20480, 105, 8, 35, 2520, 2520, 163}, {"1008B", 160, 25600, 128, 8, 64, 3072, 3072, 163},
  };
  std::vector<PublishedRun> runs;
  for (const Row& r : rows) {
    PublishedRun run;
    run.source = "Narayanan 2021 Table 1";
    run.name = r.name;
    run.model = megatron_gpt(r.layers, r.hidden, r.heads);
    run.training.global_batch = r.batch;
    run.training.micro_batch = 1;
    run.training.recompute = Recompute::kFull;
    run.training.overlap_dp = false;
    run.training.gradient_bytes = 2;
    run.layout.mesh = parallel::MeshShape{r.tp, 1, r.gpus / (r.tp * r.pp), r.pp};
    run.layout.micro_batch = 1;
    run.layout.recompute = Recompute::kFull;
    run.layout.sequence_parallel = false;
    run.published = r.tflops_per_gpu;
    runs.push_back(run);
  }
  return runs;
}

std::vector<PublishedRun> korthikanti_2022_table5() {
  struct Row {
    const char* name;
    int64_t heads, hidden, layers;
    int pp, gpus;
    int64_t batch;
    double full_recompute_s, present_work_s;
  };
  // Table 3 (model, tp = 8, pp, GPUs) and Table 5 (iteration seconds) of arXiv:2205.05198.
  const Row rows[] = {
      {"22B", 64, 6144, 48, 1, 8, 4, 1.42, 1.10},
      {"175B", 96, 12288, 96, 8, 64, 64, 18.13, 13.75},
      {"530B", 128, 20480, 105, 35, 280, 280, 49.05, 37.83},
      {"1T", 160, 25600, 128, 64, 512, 512, 94.42, 71.49},
  };
  std::vector<PublishedRun> runs;
  for (const Row& r : rows) {
    for (bool present : {false, true}) {
      PublishedRun run;
      run.source = "Korthikanti 2022 Table 5";
      run.name = std::string(r.name) + (present ? " seq-par + selective" : " full recompute");
      run.model = megatron_gpt(r.layers, r.hidden, r.heads);
      run.training.global_batch = r.batch;
      run.training.micro_batch = 1;
      run.training.recompute = present ? Recompute::kSelective : Recompute::kFull;
      run.training.sequence_parallel = present;
      run.training.overlap_dp = false;
      run.training.gradient_bytes = 2;
      run.layout.mesh = parallel::MeshShape{8, 1, r.gpus / (8 * r.pp), r.pp};
      run.layout.micro_batch = 1;
      run.layout.recompute = run.training.recompute;
      run.layout.sequence_parallel = present;
      run.published = present ? r.present_work_s : r.full_recompute_s;
      run.is_seconds = true;
      runs.push_back(run);
    }
  }
  return runs;
}

std::vector<PublishedRun> all_published_runs() {
  std::vector<PublishedRun> runs = narayanan_2021_table1();
  for (PublishedRun& r : korthikanti_2022_table5()) runs.push_back(std::move(r));
  return runs;
}

}  // namespace nibble::plan
