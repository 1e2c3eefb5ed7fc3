// plan/: every layout the enumerator proposes passes nibble's own rules (parallel::validate_mesh, the batch
// rule, the pipeline split and schedule checker), the ranking puts layouts that fit first, and the printed
// [parallel] section reads back as the layout.
#include <gtest/gtest.h>

#include <set>
#include <toml++/toml.h>

#include "plan/layout_search.h"
#include "plan/train_config_reader.h"
#include "precision/error.h"

namespace nibble::plan {
namespace {

PlanInput llama_like(int64_t layers, int64_t hidden, int64_t heads, int64_t seq, int64_t batch) {
  PlanInput in = nibble_defaults();
  in.model.layers = layers, in.model.hidden = hidden, in.model.heads = heads, in.model.seq_len = seq;
  in.model.vocab = 32768;
  in.training.global_batch = batch;
  return in;
}

TEST(PlanLayouts, EveryProposedLayoutPassesValidateMesh) {
  const PlanInput in = llama_like(32, 4096, 32, 4096, 256);
  SearchOptions options;
  options.gpus = 64;
  const std::vector<RankedLayout> ranked = rank_layouts(in.model, in.training, load_cluster("h100"), options);
  ASSERT_FALSE(ranked.empty());
  std::set<std::tuple<int, int, int, int>> meshes;
  for (const RankedLayout& r : ranked) {
    const parallel::MeshShape& s = r.layout.mesh;
    meshes.insert({s.tp, s.cp, s.dp, s.pp});
    parallel::ModelShape shape{in.model.heads, in.model.kv_heads, in.model.hidden, in.model.ffn_hidden(),
                               in.model.vocab, in.model.layers, in.model.seq_len, r.layout.sequence_parallel};
    EXPECT_NO_THROW(parallel::validate_mesh(s, 64, shape)) << s.str();
    EXPECT_NO_THROW(check_layout(in.model, in.training, r.layout)) << s.str();
    EXPECT_EQ(in.training.global_batch % (r.layout.micro_batch * s.dp), 0) << s.str();
  }
  // Layouts that break a rule never appear: tp = 64 does not divide 32 heads, pp = 64 not 32 layers.
  for (const auto& [tp, cp, dp, pp] : meshes) {
    EXPECT_EQ(in.model.heads % tp, 0);
    EXPECT_EQ(in.model.layers % pp, 0);
  }
  // ... and the ones that pass are all there: every (tp, cp, pp) that validate_mesh accepts with dp = rest.
  int accepted = 0;
  for (int tp = 1; tp <= 64; tp *= 2)
    for (int cp = 1; tp * cp <= 64; cp *= 2)
      for (int pp = 1; tp * cp * pp <= 64; pp *= 2) {
        const int dp = 64 / (tp * cp * pp);
        try {
          check_layout(in.model, in.training, Layout{parallel::MeshShape{tp, cp, dp, pp}, 1, false, Recompute::kNone});
          ++accepted;
        } catch (const Error&) {
        }
      }
  EXPECT_EQ(static_cast<int>(meshes.size()), accepted);
}

TEST(PlanLayouts, RankedByFitsThenThroughput) {
  const PlanInput in = llama_like(48, 8192, 64, 4096, 512);  // ~40B: does not fit everywhere on 80 GB
  SearchOptions options;
  options.gpus = 64;
  const std::vector<RankedLayout> ranked = rank_layouts(in.model, in.training, load_cluster("h100"), options);
  ASSERT_GT(ranked.size(), 2u);
  bool seen_non_fitting = false;
  for (size_t i = 0; i < ranked.size(); ++i) {
    if (!ranked[i].memory.fits()) seen_non_fitting = true;
    EXPECT_FALSE(seen_non_fitting && ranked[i].memory.fits()) << "a fitting layout ranked below one that does not";
    if (i > 0 && ranked[i].memory.fits() == ranked[i - 1].memory.fits()) {
      EXPECT_LE(ranked[i].time.tokens_per_second, ranked[i - 1].time.tokens_per_second);
    }
  }
  EXPECT_TRUE(ranked.front().memory.fits());
  EXPECT_TRUE(seen_non_fitting);  // tp = cp = pp = 1 (all 40B per GPU) cannot fit
}

TEST(PlanLayouts, ParallelSectionReadsBackAsTheLayout) {
  PlanInput in = llama_like(32, 4096, 32, 4096, 256);
  const Layout l{parallel::MeshShape{4, 2, 4, 2}, 2, true, Recompute::kNone};
  const toml::table t = toml::parse(parallel_toml_section(l, in.training));
  EXPECT_EQ(t["parallel"]["tp"].value_or(0), 4);
  EXPECT_EQ(t["parallel"]["cp"].value_or(0), 2);
  EXPECT_EQ(t["parallel"]["dp"].value_or(0), 4);
  EXPECT_EQ(t["parallel"]["pp"].value_or(0), 2);
  EXPECT_TRUE(t["parallel"]["sequence_parallel"].value_or(false));
  EXPECT_EQ(t["train"]["micro_batch"].value_or(0), 2);
}

TEST(PlanLayouts, RecomputationIsTheTrainerKey) {
  PlanInput in = llama_like(32, 4096, 32, 4096, 256);
  const Layout none{parallel::MeshShape{4, 2, 4, 2}, 2, true, Recompute::kNone};
  EXPECT_FALSE(toml::parse(parallel_toml_section(none, in.training))["model"]);
  for (Recompute r : {Recompute::kSelective, Recompute::kFull}) {
    const Layout l{parallel::MeshShape{4, 2, 4, 2}, 2, true, r};
    const toml::table t = toml::parse(parallel_toml_section(l, in.training));
    EXPECT_EQ(t["model"]["recompute"].value_or(std::string()), recompute_name(r));  // nibble-train's model.recompute
  }
}

}  // namespace
}  // namespace nibble::plan
