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

#include "core/data/bpe_tokenizer.h"
#include "core/data/byte_tokenizer.h"
#include "precision/error.h"

namespace nibble::core::data {
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

PreparedCorpus prepare_corpus(const std::string& text_path, const std::string& out_dir, double val_fraction,
                              const std::string& tokenizer, std::optional<int64_t> vocab_option) {
  if (!(val_fraction > 0.0 && val_fraction <= 0.5))
    throw InvalidArgument("prepare: val_fraction = " + std::to_string(val_fraction) + " must be in (0, 0.5]");
  if (tokenizer != "byte" && tokenizer != "bpe")
    throw InvalidArgument("prepare: --tokenizer '" + tokenizer + "' is unknown; valid: byte, bpe");
  if (tokenizer == "byte" && vocab_option)
    throw InvalidArgument("prepare: --vocab " + std::to_string(*vocab_option) +
                          " applies to --tokenizer bpe only (the byte tokenizer has 256 ids)");
  const int64_t vocab = vocab_option.value_or(1024);
  if (tokenizer == "bpe" && (vocab < 257 || vocab > 65536))
    throw InvalidArgument("prepare: --vocab " + std::to_string(vocab) +
                          " is out of range; valid: 257 .. 65536 (token files hold uint16 ids)");
  std::ifstream in(text_path, std::ios::binary);
  if (!in) throw InvalidArgument("prepare: cannot read the corpus '" + text_path + "' (run scripts/setup.sh?)");
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  if (text.size() < 1000)
    throw InvalidArgument("prepare: the corpus '" + text_path + "' has " + std::to_string(text.size()) +
                          " bytes; at least 1000 are needed for a train and a held-out split");
  // The split is by bytes, before tokenizing, so BPE never sees the held-out text.
  const auto val_bytes = static_cast<size_t>(static_cast<double>(text.size()) * val_fraction);
  const std::string train_text = text.substr(0, text.size() - val_bytes), val_text = text.substr(text.size() - val_bytes);
  std::filesystem::create_directories(out_dir);
  nlohmann::json meta = {{"tokenizer", tokenizer}, {"dtype", "uint16"}, {"source", text_path},
                         {"val_fraction", val_fraction}};
  std::vector<uint16_t> train, val;
  if (tokenizer == "bpe") {
    const BpeTokenizer bpe = BpeTokenizer::train(train_text, vocab);
    bpe.save(out_dir + "/bpe_merges.txt");
    train = bpe.encode(train_text);
    val = bpe.encode(val_text);
    meta["vocab"] = bpe.vocab();
    meta["merges"] = "bpe_merges.txt";
  } else {
    train = byte_encode(train_text);
    val = byte_encode(val_text);
    meta["vocab"] = kByteVocab;
  }
  PreparedCorpus p{out_dir + "/train.bin", out_dir + "/val.bin", out_dir + "/meta.json",
                   static_cast<int64_t>(train.size()), static_cast<int64_t>(val.size()), meta["vocab"].get<int64_t>()};
  write_tokens(p.train_path, train.data(), train.size());
  write_tokens(p.val_path, val.data(), val.size());
  meta["train_tokens"] = train.size();
  meta["val_tokens"] = val.size();
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

}  // namespace nibble::core::data
