// core/checkpoint/manifest.h: the typed manifest round-trips, reads what older nibble versions wrote, and refuses
// each kind of malformed field naming it (the loader then never opens a file through a bad record).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/checkpoint/manifest.h"
#include "precision/error.h"

namespace ck = nibble::core::checkpoint;
using nlohmann::json;

namespace {

// A tp=2, pp=2 checkpoint of 4 ranks as the trainer writes it.
ck::Manifest sample() {
  ck::Manifest m;
  m.step = 30;
  m.consecutive_skips = 1;
  m.skipped_total = 2;
  m.recipe = "nvfp4";
  m.layout = {2, 1, 1, 2, 2, "3,5", true, false, 4, true};
  m.data_seed = 7;
  m.model_seed = 18446744073709551615ull;  // a seed may use all 64 bits
  m.train_path = "data/tokens/train.bin";
  m.config = {{"model.recipe", "\"nvfp4\""}, {"optim.zero", "0"}};
  m.params = {{"embedding.weight", 0, {1024, 64}}, {"final_norm.weight", -1, {64}}};
  // rank = tp + 2 * pp
  m.shards = {{"rank_00000.safetensors", 0, 0, 0, 0, 0, 100, 0},
              {"rank_00001.safetensors", 1, 1, 0, 0, 0, 200, 4294967295u},
              {"rank_00002.safetensors", 2, 0, 0, 0, 1, 300, 12345},
              {"rank_00003.safetensors", 3, 1, 0, 0, 1, 0, 1}};
  return m;
}

json sample_json() { return json::parse(ck::manifest_json(sample())); }

// The message of parse_manifest's refusal of `j` ("" if it accepts).
std::string refusal(const json& j) {
  try {
    ck::parse_manifest(j.dump(), "ckpt/step_00000030");
  } catch (const nibble::Error& e) {
    return e.what();
  }
  return "";
}

void expect_refused(const json& j, const std::string& part) {
  const std::string msg = refusal(j);
  EXPECT_NE(msg.find("checkpoint 'ckpt/step_00000030' has a malformed manifest.json: "), std::string::npos) << msg;
  EXPECT_NE(msg.find(part), std::string::npos) << "expected '" << part << "' in: " << msg;
}

}  // namespace

TEST(Manifest, RoundTripsEveryField) {
  const ck::Manifest m = sample();
  EXPECT_EQ(ck::parse_manifest(ck::manifest_json(m), "d"), m);
}

TEST(Manifest, ReadsAnOlderManifestWithDefaults) {
  json j = sample_json();
  for (const char* k : {"virtual_stages", "pp_layers", "pp_embedding_as_layer", "pp_head_as_layer", "world_size",
                        "sequence_parallel"})
    j["layout"].erase(k);
  j.erase("rng");
  j.erase("data");
  j.erase("contents");
  for (auto& s : j["shards"])
    for (const char* k : {"tp_rank", "cp_rank", "dp_rank", "pp_rank"}) s.erase(k);
  const ck::Manifest m = ck::parse_manifest(j.dump(), "d");
  EXPECT_EQ(m.layout.world_size, 4);
  EXPECT_EQ(m.layout.virtual_stages, 1);
  EXPECT_EQ(m.layout.pp_layers, "");
  EXPECT_EQ(m.shards[3].tp_rank, 1);  // from the mesh order
  EXPECT_EQ(m.shards[3].pp_rank, 1);
  EXPECT_EQ(m.shards[2].tp_rank, 0);
  EXPECT_EQ(m.contents, "full");  // every older checkpoint holds optimizer and Linear states
}

TEST(Manifest, RoundTripsAWeightsOnlyCheckpoint) {
  ck::Manifest m = sample();
  m.contents = ck::kContentsWeights;
  EXPECT_EQ(ck::parse_manifest(ck::manifest_json(m), "d").contents, "weights");
  json j = sample_json();
  j["contents"] = "optimizer";
  expect_refused(j, "contents = \"optimizer\" is not \"full\" or \"weights\"");
  j["contents"] = 1;
  expect_refused(j, "contents = 1 is not a string");
}

TEST(Manifest, DescribesTheLayout) {
  EXPECT_EQ(sample().layout.describe(), "tp=2 cp=1 dp=1 pp=2 (2 virtual stages, split '3,5', embedding as a layer)");
  ck::ManifestLayout flat;
  flat.tp = 4;
  flat.world_size = 4;
  EXPECT_EQ(flat.describe(), "tp=4 cp=1 dp=1 pp=1");
}

TEST(Manifest, RefusesEachMalformedField) {
  EXPECT_NE(refusal(json::parse("{}")).find("missing field format"), std::string::npos);
  {
    const std::string msg = [] {
      try {
        ck::parse_manifest("{\"format\": ", "x");
      } catch (const nibble::Error& e) {
        return std::string(e.what());
      }
      return std::string();
    }();
    EXPECT_NE(msg.find("not valid JSON"), std::string::npos) << msg;
  }
  json j = sample_json();
  j["format"] = "other-1";
  expect_refused(j, "format \"other-1\" is not \"nibble-checkpoint-1\"");
  j = sample_json();
  j["step"] = "four";
  expect_refused(j, "step = \"four\" is not an integer");
  j = sample_json();
  j["step"] = -1;
  expect_refused(j, "step = -1 is outside [0, ");
  j = sample_json();
  j["step"] = 1.5;
  expect_refused(j, "step = 1.5 is not an integer");
  j = sample_json();
  j.erase("skipped_total");
  expect_refused(j, "missing field skipped_total");
  j = sample_json();
  j["layout"]["tp"] = 0;
  expect_refused(j, "layout.tp = 0 is outside [1, 1048576]");
  j = sample_json();
  j["layout"]["world_size"] = 8;
  expect_refused(j, "layout.world_size = 8 is not tp x cp x dp x pp = 4");
  j = sample_json();
  j["layout"]["dp"] = 1 << 20;
  j["layout"]["tp"] = 1 << 20;
  expect_refused(j, "exceeds 1048576 ranks");
  j = sample_json();
  j["layout"]["sequence_parallel"] = 1;
  expect_refused(j, "layout.sequence_parallel = 1 is not true or false");
  j = sample_json();
  j["shards"].erase(3);
  expect_refused(j, "shards lists 3 files for a world of 4 ranks (tp=2 cp=1 dp=1 pp=2");
  j = sample_json();
  std::swap(j["shards"][1], j["shards"][2]);
  expect_refused(j, "shards[1].rank = 2: shards must be listed by rank");
  j = sample_json();
  j["shards"][2]["file"] = "../../../etc/passwd";  // a file outside the checkpoint directory
  expect_refused(j, "shards[2].file = \"../../../etc/passwd\" is not \"rank_00002.safetensors\"");
  j = sample_json();
  j["shards"][3]["tp_rank"] = 0;
  expect_refused(j, "shards[3].tp_rank = 0 but rank 3 of tp=2 cp=1 dp=1 pp=2");
  j = sample_json();
  j["shards"][3]["pp_rank"] = 2;
  expect_refused(j, "shards[3].pp_rank = 2 is outside [0, 1]");
  j = sample_json();
  j["shards"][0]["crc32"] = -1;
  expect_refused(j, "shards[0].crc32 = -1 is not an unsigned integer <= 4294967295");
  j = sample_json();
  j["shards"][0]["crc32"] = 4294967296ull;
  expect_refused(j, "shards[0].crc32 = 4294967296 is not an unsigned integer");
  j = sample_json();
  j["shards"][1].erase("bytes");
  expect_refused(j, "missing field shards[1].bytes");
  j = sample_json();
  j["shards"] = json::object();
  expect_refused(j, "shards is an object, not an array");
  j = sample_json();
  j["params"][0]["shard_dim"] = 2;
  expect_refused(j, "params[0].shard_dim = 2 is outside [-1, 1]");
  j = sample_json();
  j["params"][1]["full_shape"] = {64, -3};
  expect_refused(j, "params[1].full_shape[1] = -3 is outside [0, ");
  j = sample_json();
  j["params"][1]["name"] = "";
  expect_refused(j, "params[1].name is empty");
  j = sample_json();
  j["config"]["optim.zero"] = 0;
  expect_refused(j, "config.optim.zero = 0 is not a string");
  j = sample_json();
  j["rng"]["model_seed"] = -5;
  expect_refused(j, "rng.model_seed = -5 is not an unsigned integer");
  j = sample_json();
  j["layout"] = json::array();
  expect_refused(j, "layout is an array, not an object");
}
