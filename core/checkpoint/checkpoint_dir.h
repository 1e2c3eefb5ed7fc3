#pragma once
// Checkpoint directories: <root>/step_<8 digits>/{manifest.json, rank_<5 digits>.safetensors}, and
// <root>/latest naming the newest complete one. A checkpoint is written into step_<n>.tmp and renamed as a
// whole once every shard and the manifest are on disk, then `latest` is replaced by rename: a crash at any
// point leaves the previous checkpoint and `latest` untouched.
#include <cstdint>
#include <string>
#include <vector>

namespace nibble::core::checkpoint {

std::string step_dir(const std::string& root, int64_t step);      // <root>/step_00000020
std::string temp_step_dir(const std::string& root, int64_t step); // <root>/step_00000020.tmp
std::string shard_name(int rank);                                   // rank_00003.safetensors
// Creates an empty temp_step_dir (removing a stale one from a crashed attempt).
void begin_checkpoint(const std::string& root, int64_t step);
// Renames temp_step_dir to step_dir (replacing an older copy of the same step) and points `latest` at it.
void commit_checkpoint(const std::string& root, int64_t step);
// The directory `latest` names, or "" when there is no checkpoint under root.
std::string latest_checkpoint(const std::string& root);
// Every committed step directory under root (step_<n>, not .tmp), newest step first.
std::vector<std::string> committed_checkpoints(const std::string& root);
// Throws nibble::Error naming the shard when its size or CRC-32 differs from the manifest's record.
void verify_shard(const std::string& path, uint64_t expected_bytes, uint32_t expected_crc32);

}  // namespace nibble::core::checkpoint
