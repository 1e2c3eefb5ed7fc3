#include "core/saved_for_backward_meter.h"

namespace nibble::core {
namespace {
thread_local int64_t g_saved_bytes = 0;
}

void add_saved_bytes(int64_t bytes) {
  g_saved_bytes += bytes;
}
int64_t saved_bytes() {
  return g_saved_bytes;
}
void reset_saved_bytes() {
  g_saved_bytes = 0;
}

}  // namespace nibble::core
