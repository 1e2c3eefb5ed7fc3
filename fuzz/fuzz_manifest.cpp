// A checkpoint's manifest.json (core/checkpoint/manifest.h parse_manifest): every rank reads it before opening a
// shard, and resuming follows its file names, sizes and CRCs. Accepted input must also satisfy what the loader
// relies on without re-checking: one shard per rank, listed by rank, each file the name its rank writes, and
// coordinates inside the layout. An accepted manifest written back and parsed again must give the same record.
#include <cstdlib>

#include "core/checkpoint/checkpoint_dir.h"
#include "core/checkpoint/manifest.h"
#include "fuzz/fuzz_harness.h"

namespace {

void require(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "fuzz finding: an accepted manifest breaks '%s'\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace nibble::core::checkpoint;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  return nibble::fuzz::expect_accept_or_nibble_error([&] {
    const Manifest m = parse_manifest(text, "fuzz");
    const ManifestLayout& l = m.layout;
    require(static_cast<int64_t>(m.shards.size()) == l.world_size, "one shard per rank");
    require(l.tp * l.cp * l.dp * l.pp == l.world_size, "world = tp x cp x dp x pp");
    for (size_t r = 0; r < m.shards.size(); ++r) {
      const ManifestShard& s = m.shards[r];
      require(s.rank == static_cast<int64_t>(r) && s.file == shard_name(static_cast<int>(r)), "file of its rank");
      require(s.tp_rank >= 0 && s.tp_rank < l.tp && s.cp_rank >= 0 && s.cp_rank < l.cp && s.dp_rank >= 0 &&
                  s.dp_rank < l.dp && s.pp_rank >= 0 && s.pp_rank < l.pp,
              "coordinates inside the layout");
    }
    for (const ManifestParam& p : m.params)
      require(p.shard_dim >= -1 && p.shard_dim < static_cast<int64_t>(p.full_shape.size()), "shard dim in range");
    require(parse_manifest(manifest_json(m), "fuzz") == m, "write + parse round trip");
  });
}
