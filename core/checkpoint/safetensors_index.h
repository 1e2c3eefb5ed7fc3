#pragma once
// Reading parts of a safetensors file (safetensors.h) instead of the whole file: opening reads only the header
// (checked as read_safetensors checks it, safetensors_header.h); a tensor, or a range of it along one dim, is then
// read with pread from its byte offsets. Resharding a checkpoint (launch/checkpoint_reshard.h) reads through
// this: a rank reads the rows and columns of the tensors it will hold, not every saved shard file whole.
//
// Integrity: the manifest records one CRC-32 per whole file, which a range read cannot check. The resharding
// loader has each file it reads from verified whole by one rank (checkpoint_dir.h verify_shard) and agrees on
// the verdicts before any rank uses what it read; see launch/checkpoint_io.cpp.
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/checkpoint/safetensors_header.h"

namespace nibble::core::checkpoint {

class SafetensorsIndex {
 public:
  // Opens `path` and reads its header. Throws nibble::Error naming the path for a file that cannot be opened
  // or has a malformed header (the same checks and messages as read_safetensors).
  explicit SafetensorsIndex(const std::string& path);
  ~SafetensorsIndex();
  SafetensorsIndex(SafetensorsIndex&& other) noexcept;
  SafetensorsIndex& operator=(SafetensorsIndex&&) = delete;
  SafetensorsIndex(const SafetensorsIndex&) = delete;
  SafetensorsIndex& operator=(const SafetensorsIndex&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  // Every tensor, in data offset order (nibble's writer: the order it was given them).
  const std::vector<SafetensorsEntry>& entries() const { return header_.entries; }
  bool contains(const std::string& name) const { return by_name_.count(name) > 0; }
  // Throws nibble::Error naming the file and the tensor when there is none of that name.
  const SafetensorsEntry& entry(const std::string& name) const;

  torch::Tensor read(const std::string& name) const;
  // tensor.narrow(dim, start, length) as a new contiguous tensor, reading only its bytes: one range when the
  // part is contiguous in the file (dim 0, or every dim before `dim` of size 1), else one range per index of
  // the dims before `dim`. Throws InvalidArgument naming the tensor when dim or the range is outside its shape.
  torch::Tensor read_narrow(const std::string& name, int64_t dim, int64_t start, int64_t length) const;

  // Data bytes this index has read so far (the header not counted), and the file's data bytes.
  uint64_t bytes_read() const { return bytes_read_; }
  uint64_t data_bytes() const { return data_bytes_; }

 private:
  void pread_all(void* to, uint64_t bytes, uint64_t data_offset) const;

  std::string path_;
  int fd_ = -1;
  uint64_t data_start_ = 0, data_bytes_ = 0;
  SafetensorsHeader header_;
  std::map<std::string, size_t> by_name_;
  mutable uint64_t bytes_read_ = 0;
};

}  // namespace nibble::core::checkpoint
