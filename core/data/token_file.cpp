#include "core/data/token_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "core/data/byte_tokenizer.h"
#include "precision/error.h"

namespace nibble::data {
namespace {

void write_tokens(const std::string& path, const uint16_t* data, size_t count) {
  const std::string tmp = path + ".tmp";
  std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(count * sizeof(uint16_t)));
  out.close();
  if (!out) throw Error("prepare: could not write " + tmp);
  std::filesystem::rename(tmp, path);
}

}  // namespace

PreparedCorpus prepare_corpus(const std::string& text_path, const std::string& out_dir, double val_fraction) {
  if (!(val_fraction > 0.0 && val_fraction <= 0.5))
    throw InvalidArgument("prepare: val_fraction = " + std::to_string(val_fraction) + " must be in (0, 0.5]");
  std::ifstream in(text_path, std::ios::binary);
  if (!in) throw InvalidArgument("prepare: cannot read the corpus '" + text_path + "' (run scripts/setup.sh?)");
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::vector<uint16_t> tokens = byte_encode(buffer.str());
  if (tokens.size() < 1000)
    throw InvalidArgument("prepare: the corpus '" + text_path + "' has " + std::to_string(tokens.size()) +
                          " bytes; at least 1000 are needed for a train and a held-out split");
  const auto val = static_cast<size_t>(static_cast<double>(tokens.size()) * val_fraction);
  const size_t train = tokens.size() - val;
  std::filesystem::create_directories(out_dir);
  PreparedCorpus p{out_dir + "/train.bin", out_dir + "/val.bin", out_dir + "/meta.json",
                   static_cast<int64_t>(train), static_cast<int64_t>(val)};
  write_tokens(p.train_path, tokens.data(), train);
  write_tokens(p.val_path, tokens.data() + train, val);
  nlohmann::json meta = {{"tokenizer", "byte"},   {"vocab", kByteVocab},  {"dtype", "uint16"},
                         {"source", text_path},   {"train_tokens", train}, {"val_tokens", val},
                         {"val_fraction", val_fraction}};
  std::ofstream(p.meta_path) << meta.dump(2) << "\n";
  return p;
}

TokenFile::TokenFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0)
    throw InvalidArgument("token file '" + path + "' cannot be opened: " + std::strerror(errno) +
                          " (make it with `nibble-train prepare`)");
  struct stat st {};
  ::fstat(fd, &st);
  bytes_ = static_cast<size_t>(st.st_size);
  if (bytes_ == 0 || bytes_ % sizeof(uint16_t) != 0) {
    ::close(fd);
    throw InvalidArgument("token file '" + path + "' has " + std::to_string(bytes_) +
                          " bytes; a token file holds uint16 ids (a non-zero, even size)");
  }
  void* p = ::mmap(nullptr, bytes_, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) throw Error("token file '" + path + "': mmap failed: " + std::strerror(errno));
  data_ = static_cast<const uint16_t*>(p);
  count_ = static_cast<int64_t>(bytes_ / sizeof(uint16_t));
}

TokenFile::~TokenFile() {
  if (data_) ::munmap(const_cast<uint16_t*>(data_), bytes_);
}

}  // namespace nibble::data
