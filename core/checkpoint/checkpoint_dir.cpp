#include "core/checkpoint/checkpoint_dir.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/checkpoint/checksum.h"
#include "precision/error.h"

namespace nibble::core::checkpoint {
namespace fs = std::filesystem;

std::string step_dir(const std::string& root, int64_t step) {
  char name[32];
  std::snprintf(name, sizeof name, "step_%08lld", static_cast<long long>(step));
  return (fs::path(root) / name).string();
}

std::string temp_step_dir(const std::string& root, int64_t step) { return step_dir(root, step) + ".tmp"; }

std::string shard_name(int rank) {
  char name[32];
  std::snprintf(name, sizeof name, "rank_%05d.safetensors", rank);
  return name;
}

void begin_checkpoint(const std::string& root, int64_t step) {
  const fs::path tmp = temp_step_dir(root, step);
  fs::remove_all(tmp);
  fs::create_directories(tmp);
}

void commit_checkpoint(const std::string& root, int64_t step) {
  const fs::path final_dir = step_dir(root, step);
  fs::remove_all(final_dir);  // only a re-run of the same step (e.g. after resuming from an earlier one)
  fs::rename(temp_step_dir(root, step), final_dir);
  const fs::path latest = fs::path(root) / "latest", latest_tmp = fs::path(root) / "latest.tmp";
  {
    std::ofstream out(latest_tmp, std::ios::trunc);
    out << final_dir.filename().string() << "\n";
    out.close();
    if (!out) throw Error("checkpoint: could not write '" + latest_tmp.string() + "'");
  }
  fs::rename(latest_tmp, latest);
}

std::string latest_checkpoint(const std::string& root) {
  std::ifstream in(fs::path(root) / "latest");
  std::string name;
  if (!in || !(in >> name)) return "";
  return (fs::path(root) / name).string();
}

std::vector<std::string> committed_checkpoints(const std::string& root) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const std::string name = entry.path().filename().string();
    // step_ and eight or more digits, nothing after them (a .tmp directory is an unfinished write).
    if (name.size() < 13 || name.rfind("step_", 0) != 0 || !entry.is_directory()) continue;
    if (name.find_first_not_of("0123456789", 5) != std::string::npos) continue;
    found.emplace_back(std::stoll(name.substr(5)), entry.path().string());
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(std::move(f.second));
  return out;
}

void verify_shard(const std::string& path, uint64_t expected_bytes, uint32_t expected_crc32) {
  std::error_code ec;
  const uint64_t bytes = fs::file_size(path, ec);
  if (ec) throw Error("checkpoint shard '" + path + "' is missing: " + ec.message());
  if (bytes != expected_bytes)
    throw Error("checkpoint shard '" + path + "' is truncated or altered: " + std::to_string(bytes) +
                " bytes, the manifest records " + std::to_string(expected_bytes));
  const uint32_t crc = crc32_file(path);
  if (crc != expected_crc32)
    throw Error("checkpoint shard '" + path + "' is corrupted: CRC-32 " + std::to_string(crc) +
                " differs from the manifest's " + std::to_string(expected_crc32));
}

}  // namespace nibble::core::checkpoint
