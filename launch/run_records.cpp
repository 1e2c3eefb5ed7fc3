#include "launch/run_records.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "launch/log.h"
#include "precision/error.h"

namespace nibble::launch {
namespace {

// Writes all of `text` to fd; false (errno set) when the system refuses part of it.
bool write_all(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

RunRecords::RunRecords(const std::string& path, int64_t resumed_step, const std::string& resumed_from)
    : path_(path) {
  if (resumed_step >= 0) {
    std::string kept;
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
      const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded() || !j.is_object()) {
        ++dropped_torn_;
        continue;
      }
      if (j.contains("step") && j["step"].is_number_integer() && j["step"].get<int64_t>() > resumed_step) {
        ++dropped_after_;
        continue;
      }
      kept += line + "\n";
    }
    kept += nlohmann::ordered_json{{"step", resumed_step}, {"resumed_from", resumed_from}}.dump() + "\n";
    const std::string tmp = path + ".tmp";
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || !write_all(fd, kept) || ::fsync(fd) != 0) {
      const std::string why = std::strerror(errno);
      if (fd >= 0) ::close(fd);
      throw Error("metrics: could not rewrite '" + path + "' for the resume: " + why);
    }
    ::close(fd);
    std::filesystem::rename(tmp, path);
  }
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (resumed_step >= 0 ? 0 : O_TRUNC), 0644);
  if (fd_ < 0) throw Error("metrics: could not open '" + path + "': " + std::strerror(errno));
}

RunRecords::~RunRecords() {
  if (fd_ >= 0) ::close(fd_);
}

void RunRecords::write(const nlohmann::ordered_json& record) {
  if (write_all(fd_, record.dump() + "\n")) return;
  if (!warned_)
    log_warning("metrics: could not append to '" + path_ + "': " + std::strerror(errno) +
                "; training goes on without its records");
  warned_ = true;
}

}  // namespace nibble::launch
