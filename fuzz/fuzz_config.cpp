// nibble-train's TOML config with command-line overrides (launch/train_config.h load_config): the bytes before
// the first NUL are the TOML file, each line after it one override "section.key value" (as `--section.key value`).
// Parsing and the type checks of every key are fuzzed; the rules of validate() are tests/python/
// test_config_rules.py's (they need the whole trainer linked).
#include <string>
#include <utility>
#include <vector>

#include "fuzz/fuzz_harness.h"
#include "launch/train_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string toml = input.substr(0, nul);
  std::vector<std::pair<std::string, std::string>> overrides;
  if (nul != std::string::npos) {
    size_t at = nul + 1;
    while (at < input.size()) {
      const size_t end = std::min(input.find('\n', at), input.size());
      const std::string line = input.substr(at, end - at);
      const size_t space = line.find(' ');
      overrides.emplace_back(line.substr(0, space), space == std::string::npos ? "" : line.substr(space + 1));
      at = end + 1;
    }
  }
  const std::string path =
      nibble::fuzz::write_file("config.toml", reinterpret_cast<const uint8_t*>(toml.data()), toml.size());
  return nibble::fuzz::expect_accept_or_nibble_error([&] {
    const nibble::launch::TrainConfig c = nibble::launch::load_config(path, overrides);
    (void)c.to_map();
    (void)c.pp_layer_counts();
  });
}
