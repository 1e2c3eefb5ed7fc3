// nibble-train: `nibble-train prepare --input corpus.txt --out data/tokens` makes token files; `export` / `import`
// convert checkpoints to and from Hugging Face Llama directories (docs/HUGGINGFACE.md);
// `mpirun -np N nibble-train --config job.toml [--section.key value ...] [--resume]` trains.
// The config is loaded and validated on every rank before MPI starts or anything is allocated (the world
// size comes from the launcher's environment), so a bad config is one message per rank and exit code 2.
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "core/data/token_file.h"
#include "launch/device_choice.h"
#include "launch/host_memory.h"
#include "launch/log.h"
#include "launch/train_config.h"
#include "launch/trainer.h"
#include "parallel/runtime.h"
#include "precision/error.h"

namespace {

int env_rank() {
  try {
    const auto env = nibble::parallel::read_launch_env();
    return env.rank >= 0 ? env.rank : 0;
  } catch (...) {
    return 0;
  }
}

// "--section.key value", "--section.key=value", and "--resume" (= --checkpoint.resume true).
std::vector<std::pair<std::string, std::string>> parse_overrides(const std::vector<std::string>& args) {
  std::vector<std::pair<std::string, std::string>> out;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) != 0)
      throw nibble::InvalidArgument("unexpected argument '" + a + "'; overrides are --section.key value");
    std::string key = a.substr(2);
    if (key == "resume") {
      out.emplace_back("checkpoint.resume", "true");
      continue;
    }
    if (auto eq = key.find('='); eq != std::string::npos) {
      out.emplace_back(key.substr(0, eq), key.substr(eq + 1));
      continue;
    }
    if (i + 1 >= args.size()) throw nibble::InvalidArgument("override --" + key + " has no value");
    out.emplace_back(key, args[++i]);
  }
  return out;
}

// `nibble-train plot|export|import ...`: subcommands written in Python (python/nibble/plot.py: matplotlib;
// hf_export.py / hf_import.py: transformers, safetensors, tokenizers), run as `python -m <module>`. The installed
// command (pip install; python/_nibble_launcher) names its interpreter in NIBBLE_PYTHON_EXECUTABLE, which
// imports the installed package as it is; the build tree's binary uses the Python it was configured with and
// puts the build's package first on PYTHONPATH. Returns only if it cannot start.
int run_python_module(const std::string& module, const std::string& subcommand, const std::vector<std::string>& args) {
  std::string python;
  if (const char* launcher_python = std::getenv("NIBBLE_PYTHON_EXECUTABLE"); launcher_python && *launcher_python) {
    python = launcher_python;
  } else {
#ifdef NIBBLE_PYTHON_EXECUTABLE
    python = NIBBLE_PYTHON_EXECUTABLE;
    const char* old_path = std::getenv("PYTHONPATH");
    const std::string path = std::string(NIBBLE_PYTHON_PACKAGE_DIR) + (old_path && *old_path ? ":" + std::string(old_path) : "");
    ::setenv("PYTHONPATH", path.c_str(), 1);
#else
    nibble::launch::log_error(subcommand + ": this build has no Python (configured with NIBBLE_PYTHON=OFF); run "
                              "`python -m " + module + "` from a build that has it");
    return 2;
#endif
  }
  std::vector<std::string> argv_text = {python, "-m", module};
  argv_text.insert(argv_text.end(), args.begin(), args.end());
  std::vector<char*> argv_ptrs;
  for (std::string& a : argv_text) argv_ptrs.push_back(a.data());
  argv_ptrs.push_back(nullptr);
  ::execv(python.c_str(), argv_ptrs.data());
  nibble::launch::log_error(subcommand + ": could not run " + python + ": " + std::strerror(errno) +
                            " (run scripts/setup.sh, which makes the venv with matplotlib and transformers)");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  const int rank = env_rank();
  nibble::launch::init_logging(rank);
  // Past a file-size limit (ulimit -f) a write then fails with EFBIG, which the checkpoint code reports and
  // handles (checkpoint.on_error), instead of SIGXFSZ ending the rank with a core dump.
  std::signal(SIGXFSZ, SIG_IGN);
  nibble::launch::keep_freed_host_memory();
  CLI::App app{
      "nibble-train: low-precision GPT training (FP8 / MXFP8 / NVFP4 / MXFP4 recipes) on any "
      "tp x cp x dp x pp layout"};
  app.allow_extras();
  std::string config_path;
  app.add_option("--config", config_path, "TOML config (examples/configs/*.toml)");
  auto* prepare = app.add_subcommand("prepare", "tokenize a text corpus into uint16 token files with a held-out split");
  std::string input, out_dir = "data/tokens";
  double val_fraction = 0.02;
  std::string tokenizer = "byte";
  int64_t vocab = 1024;
  prepare->add_option("--input", input, "text corpus")->required();
  prepare->add_option("--out", out_dir, "output directory (train.bin, val.bin, meta.json)");
  prepare->add_option("--val-fraction", val_fraction, "fraction of the text held out for eval");
  prepare->add_option("--tokenizer", tokenizer, "byte (256 ids, default) or bpe (trained here on the training text)");
  auto* vocab_flag = prepare->add_option("--vocab", vocab, "bpe only: vocabulary size, 257 .. 65536 (default 1024)");
  auto* keys = app.add_subcommand("keys", "list every config key with its type and default (one per line)");
  auto* plot = app.add_subcommand("plot", "PNGs of runs' records: nibble-train plot RUN_DIR [RUN_DIR ...] --out DIR "
                                          "[--reference RUN_DIR] (python -m nibble.plot, matplotlib)");
  plot->allow_extras();
  plot->prefix_command();  // everything after `plot` goes to the plotting module as it is
  auto* export_cmd = app.add_subcommand(
      "export", "a checkpoint (any layout) as a Hugging Face Llama directory: nibble-train export --checkpoint DIR "
                "--format hf --out OUT [--dtype fp32|bf16] (python -m nibble.hf_export; docs/HUGGINGFACE.md)");
  export_cmd->allow_extras();
  export_cmd->prefix_command();
  auto* import_cmd = app.add_subcommand(
      "import", "a Hugging Face Llama directory as a weights-only nibble checkpoint that --resume fine-tunes from: "
                "nibble-train import --hf DIR --out CKPT (python -m nibble.hf_import; docs/HUGGINGFACE.md)");
  import_cmd->allow_extras();
  import_cmd->prefix_command();
  app.footer("Overrides: --section.key value for any config key, e.g. --train.steps 40 --model.recipe nvfp4; "
             "--resume continues from the latest checkpoint. `nibble-train keys` lists the keys.");
  CLI11_PARSE(app, argc, argv);

  if (*keys) {
    for (const auto& k : nibble::launch::config_schema())
      std::printf("%-34s %-18s %s\n", k.key.c_str(), k.type.c_str(),
                  k.default_value.empty() ? "\"\"" : k.default_value.c_str());
    return 0;
  }

  if (*plot) return run_python_module("nibble.plot", "plot", plot->remaining());
  if (*export_cmd) return run_python_module("nibble.hf_export", "export", export_cmd->remaining());
  if (*import_cmd) return run_python_module("nibble.hf_import", "import", import_cmd->remaining());

  if (*prepare) {
    try {
      const auto p =
          nibble::core::data::prepare_corpus(input, out_dir, val_fraction, tokenizer,
                                             vocab_flag->count() > 0 ? std::optional<int64_t>(vocab) : std::nullopt);
      std::printf("prepared %s (%s tokenizer, vocab %lld): %lld train tokens -> %s, %lld held-out tokens -> %s\n",
                  input.c_str(), tokenizer.c_str(), static_cast<long long>(p.vocab),
                  static_cast<long long>(p.train_tokens), p.train_path.c_str(),
                  static_cast<long long>(p.val_tokens), p.val_path.c_str());
      return 0;
    } catch (const std::exception& e) {
      nibble::launch::log_error(std::string("error: ") + e.what());
      return 2;
    }
  }

  nibble::launch::TrainConfig config;
  nibble::launch::DeviceChoice device;
  try {
    config = nibble::launch::load_config(config_path, parse_overrides(app.remaining()));
    const auto env = nibble::parallel::read_launch_env();
    nibble::launch::validate(config, env.size > 0 ? env.size : 1);
    // Before MPI starts: a device that cannot be used fails here, on every rank alike, never in a collective.
    device = nibble::launch::choose_train_device(config.device, nibble::launch::visible_cuda_devices(),
                                                 nibble::launch::cuda_training_gap(config));
  } catch (const std::exception& e) {
    nibble::launch::log_error(std::string("config error: ") + e.what());
    return 2;
  }
  int code = 0;
  try {
    code = nibble::launch::run_training(config, device);
  } catch (const std::exception& e) {
    nibble::launch::log_error(std::string("error: ") + e.what());
    // Other ranks may be waiting in a collective for this one: end the whole job instead of letting them
    // run into their deadlines.
    if (nibble::parallel::is_initialized() && nibble::parallel::info().world_size > 1)
      nibble::parallel::abort_job("[rank " + std::to_string(rank) + "] ending the job after the error above", 1);
    code = 1;
  }
  nibble::parallel::shutdown();
  return code;
}
