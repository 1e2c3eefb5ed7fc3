#include "core/checkpoint/safetensors_index.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "precision/error.h"

namespace nibble::core::checkpoint {

SafetensorsIndex::SafetensorsIndex(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw Error("safetensors file '" + path + "' cannot be opened: " + std::strerror(errno));
  try {
    struct stat st {};
    if (::fstat(fd_, &st) != 0) throw Error("safetensors file '" + path + "': " + std::strerror(errno));
    const auto size = static_cast<uint64_t>(st.st_size);
    uint64_t n = 0;
    const bool readable = size >= 8 && ::pread(fd_, &n, 8, 0) == 8;
    check_safetensors_header_length(readable, n, size, path);
    std::string text(n, '\0');
    if (n > 0 && ::pread(fd_, text.data(), n, 8) != static_cast<ssize_t>(n))
      throw Error("safetensors file '" + path + "' is truncated: its header could not be read");
    data_start_ = 8 + n;
    data_bytes_ = size - 8 - n;
    header_ = parse_safetensors_header(text, data_bytes_, path);
  } catch (...) {
    ::close(fd_);
    throw;
  }
  for (size_t i = 0; i < header_.entries.size(); ++i) by_name_[header_.entries[i].name] = i;
}

SafetensorsIndex::~SafetensorsIndex() {
  if (fd_ >= 0) ::close(fd_);
}

SafetensorsIndex::SafetensorsIndex(SafetensorsIndex&& o) noexcept
    : path_(std::move(o.path_)),
      fd_(o.fd_),
      data_start_(o.data_start_),
      data_bytes_(o.data_bytes_),
      header_(std::move(o.header_)),
      by_name_(std::move(o.by_name_)),
      bytes_read_(o.bytes_read_) {
  o.fd_ = -1;
}

const SafetensorsEntry& SafetensorsIndex::entry(const std::string& name) const {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) throw Error("safetensors file '" + path_ + "' holds no tensor '" + name + "'");
  return header_.entries[it->second];
}

void SafetensorsIndex::pread_all(void* to, uint64_t bytes, uint64_t data_offset) const {
  auto* p = static_cast<char*>(to);
  uint64_t done = 0;
  while (done < bytes) {
    const ssize_t got = ::pread(fd_, p + done, bytes - done, static_cast<off_t>(data_start_ + data_offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0)
      throw Error("safetensors file '" + path_ + "': reading " + std::to_string(bytes) + " bytes at data offset " +
                  std::to_string(data_offset) + " failed: " + (got < 0 ? std::strerror(errno) : "end of file"));
    done += static_cast<uint64_t>(got);
  }
  bytes_read_ += bytes;
}

torch::Tensor SafetensorsIndex::read(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  torch::Tensor t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype));
  if (e.end > e.begin) pread_all(t.data_ptr(), e.end - e.begin, e.begin);
  return t;
}

torch::Tensor SafetensorsIndex::read_narrow(const std::string& name, int64_t dim, int64_t start,
                                            int64_t length) const {
  const SafetensorsEntry& e = entry(name);
  const auto rank = static_cast<int64_t>(e.shape.size());
  if (dim < 0 || dim >= rank || start < 0 || length < 0 || start + length > e.shape[static_cast<size_t>(dim)])
    throw InvalidArgument("safetensors file '" + path_ + "': tensor '" + name + "' of shape " +
                          c10::str(c10::IntArrayRef(e.shape)) + " has no range [" + std::to_string(start) + ", " +
                          std::to_string(start + length) + ") along dim " + std::to_string(dim));
  // The tensor as [outer, D, inner] around `dim`: the part is `outer` runs of length*inner elements.
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= e.shape[static_cast<size_t>(d)];
  for (int64_t d = dim + 1; d < rank; ++d) inner *= e.shape[static_cast<size_t>(d)];
  const int64_t extent = e.shape[static_cast<size_t>(dim)];
  std::vector<int64_t> shape = e.shape;
  shape[static_cast<size_t>(dim)] = length;
  torch::Tensor t = torch::empty(shape, torch::TensorOptions().dtype(e.dtype));
  const auto element = static_cast<uint64_t>(c10::elementSize(e.dtype));
  const uint64_t run = static_cast<uint64_t>(length * inner) * element;
  if (run == 0) return t;
  auto* to = static_cast<char*>(t.data_ptr());
  for (int64_t o = 0; o < outer; ++o)
    pread_all(to + static_cast<uint64_t>(o) * run, run,
              e.begin + static_cast<uint64_t>((o * extent + start) * inner) * element);
  return t;
}

}  // namespace nibble::core::checkpoint
