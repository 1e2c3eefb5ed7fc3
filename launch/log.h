#pragma once
// nibble-train's diagnostics: spdlog's default logger on stderr, every line prefixed with the rank that wrote
// it ("[rank 3] config error: ..."), so the interleaved output of an mpirun job says who saw what. What rank 0
// reports to the user (progress lines, eval, summary, sample) stays plain stdout.
//
// spdlog stays behind these functions (launch/log.cpp, its own library target): its headers need the system's
// fmt, and torch's include directories carry a different fmt that would shadow it in any file including torch.
#include <string>

namespace nibble::launch {

// Installs the default logger (stderr, "[rank N] <message>"); call first thing in main, before any rank logs.
void init_logging(int rank);
void log_warning(const std::string& message);
void log_error(const std::string& message);

}  // namespace nibble::launch
