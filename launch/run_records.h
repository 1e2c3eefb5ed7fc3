#pragma once
// The run's own records, <out_dir>/metrics.jsonl (one JSON object per line), as readers need them after any crash:
// - every record is one write() of the whole line, so a SIGKILL never leaves half a line (a signal ends a
//   process between system calls, never inside a write to a regular file);
// - a resumed run keeps only the records of steps up to its checkpoint's, drops a torn or unreadable line a
//   crash of an older version (or a full disk) left, and marks the resume with {"step": S, "resumed_from": dir},
//   so the steps a killed run did after its last checkpoint do not appear twice.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

namespace nibble::launch {

class RunRecords {
 public:
  // Opens `path` (rank 0 only): resumed_step < 0 starts a fresh file; >= 0 rewrites it as above, atomically
  // (a temporary file renamed over it), then appends.
  RunRecords(const std::string& path, int64_t resumed_step, const std::string& resumed_from);
  ~RunRecords();
  RunRecords(const RunRecords&) = delete;
  RunRecords& operator=(const RunRecords&) = delete;

  // Appends one record. A failed write (disk full) is reported once on stderr and training goes on: the records
  // are a log, the checkpoints are the state.
  void write(const nlohmann::ordered_json& record);

  // What the resume dropped: lines that did not parse, and records of steps past the checkpoint.
  int64_t dropped_torn() const { return dropped_torn_; }
  int64_t dropped_after_checkpoint() const { return dropped_after_; }

 private:
  std::string path_;
  int fd_ = -1;
  bool warned_ = false;
  int64_t dropped_torn_ = 0, dropped_after_ = 0;
};

}  // namespace nibble::launch
