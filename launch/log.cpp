#include "launch/log.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace nibble::launch {

void init_logging(int rank) {
  // Unbuffered stderr (not the colour sink: mpirun forwards stderr to a pipe, and colour codes would end up in
  // log files and tests' captured output).
  auto logger = spdlog::stderr_logger_mt("nibble");
  logger->set_pattern("[rank " + std::to_string(rank) + "] %v");
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
}

void log_warning(const std::string& message) {
  spdlog::warn(message);
}
void log_error(const std::string& message) {
  spdlog::error(message);
}

}  // namespace nibble::launch
