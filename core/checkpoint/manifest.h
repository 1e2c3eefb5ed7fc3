#pragma once
// manifest.json of a checkpoint directory (checkpoint_dir.h), as a typed record: what rank 0 writes after
// every shard is on disk, and what every rank reads before it opens a shard. The file is user- and disk-
// controlled input (an edited, truncated or foreign file), so parse_manifest checks every field's presence,
// type and range and the fields' agreement with each other (one shard per rank, the layout's product is the
// world size, each shard's file name is the one its rank writes -- never a path that leaves the directory)
// before anything is read through it, and names the field in its message. fuzz/fuzz_manifest.cpp fuzzes it.
// Pure: no torch, no MPI.
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace nibble::core::checkpoint {

inline constexpr const char* kManifestFormat = "nibble-checkpoint-1";
// Manifest::contents: what the shards hold. "full" (what nibble-train writes): parameters, optimizer states
// and Linear states, resumed as they are. "weights": model parameters only (`nibble-train import` of a Hugging
// Face model): a resume loads them and starts the optimizer, the Linear states and the step count fresh -- a
// fine-tuning start, as Megatron's --finetune, never optimizer state made up to look resumable.
inline constexpr const char* kContentsFull = "full";
inline constexpr const char* kContentsWeights = "weights";

// The mesh and pipeline split the checkpoint was written at. Fields an older manifest lacks take these
// defaults (they were added with the features they describe).
struct ManifestLayout {
  int64_t tp = 1, cp = 1, dp = 1, pp = 1;
  int64_t virtual_stages = 1;
  std::string pp_layers;  // "" = an even split
  bool pp_embedding_as_layer = false, pp_head_as_layer = false;
  int64_t world_size = 1;
  bool sequence_parallel = false;
  // "tp=2 cp=1 dp=1 pp=2 (2 virtual stages, split '3,5')"; the parenthesis only with pp > 1
  std::string describe() const;
  friend bool operator==(const ManifestLayout&, const ManifestLayout&) = default;
};

// One rank's shard file: its coordinates and the size and CRC-32 it was written with.
struct ManifestShard {
  std::string file;  // always shard_name(rank)
  int64_t rank = 0, tp_rank = 0, cp_rank = 0, dp_rank = 0, pp_rank = 0;
  uint64_t bytes = 0;
  uint32_t crc32 = 0;
  friend bool operator==(const ManifestShard&, const ManifestShard&) = default;
};

// A model parameter as rank 0 holds it: the dim it is split along over tp (-1 = replicated) and its full shape.
struct ManifestParam {
  std::string name;
  int64_t shard_dim = -1;
  std::vector<int64_t> full_shape;
  friend bool operator==(const ManifestParam&, const ManifestParam&) = default;
};

struct Manifest {
  std::string contents = kContentsFull;  // kContentsFull or kContentsWeights; absent in older manifests: full
  int64_t step = 0;  // steps completed
  int64_t consecutive_skips = 0, skipped_total = 0;
  std::string recipe;
  ManifestLayout layout;
  uint64_t data_seed = 0, model_seed = 0;
  std::string train_path;
  std::map<std::string, std::string> config;  // every config key as TOML text (TrainConfig::to_map)
  std::vector<ManifestParam> params;
  std::vector<ManifestShard> shards;  // shards[r] is world rank r's
  friend bool operator==(const Manifest&, const Manifest&) = default;
};

// The JSON text rank 0 writes (2-space indented, one trailing newline).
std::string manifest_json(const Manifest& manifest);

// Parses and checks manifest text. Throws nibble::Error "checkpoint '<dir>' has a malformed manifest.json:
// <what>" naming the field (e.g. "shards[3].crc32 = -1 is not an unsigned 32-bit integer").
Manifest parse_manifest(std::string_view text, const std::string& dir);
// Reads <dir>/manifest.json; a missing file is "checkpoint '<dir>' has no manifest.json".
Manifest read_manifest(const std::string& dir);

}  // namespace nibble::core::checkpoint
