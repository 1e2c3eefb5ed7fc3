#pragma once
// What every nibble fuzz target checks (issue 19): a parser given any bytes either accepts them or rejects them
// with a nibble::Error (InvalidArgument included) whose message is not empty. Any other exception -- a
// nlohmann::json type error escaping with no context, std::out_of_range from a stoi, a bad_alloc from a size
// read off the input -- is a finding: the harness prints it and aborts, which libFuzzer reports as a crash with
// the input saved. Memory errors and undefined behaviour are caught by the sanitizers the targets are built with.
// The parsers read files, so each input is written into a scratch directory of this process first.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>

#include "precision/error.h"

namespace nibble::fuzz {

inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    const auto d = std::filesystem::temp_directory_path() / ("nibble-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

inline std::string write_file(const std::string& name, const uint8_t* data, size_t size) {
  const std::filesystem::path p = scratch_dir() / name;
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  return p.string();
}

template <class Parse>
int expect_accept_or_nibble_error(Parse&& parse) {
  try {
    parse();
  } catch (const nibble::Error& e) {
    if (std::string(e.what()).empty()) {
      std::fprintf(stderr, "fuzz finding: a nibble::Error with an empty message\n");
      std::abort();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz finding: a non-nibble exception escaped the parser: %s\n", e.what());
    std::abort();
  }
  return 0;
}

}  // namespace nibble::fuzz
