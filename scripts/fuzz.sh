#!/usr/bin/env bash
# Fuzzes nibble's parsers of user and disk input with libFuzzer (issue 19; fuzz/, clang + ASan + UBSan):
#   scripts/fuzz.sh [SECONDS]   each target for SECONDS (default 60), one after the other
# Each target starts from the seeds in fuzz/corpus/<target>/ (real files: the example configs, a BPE merges file and meta.json made by
# `nibble-train prepare --tokenizer bpe`, a token file's first ids) and keeps what it finds in
# build-fuzz/corpus/<target>/. A crash (an abort from the harness on a non-nibble exception, a sanitizer report,
# a timeout of 10 s on one input, a leak) stops that target, leaves the input in build-fuzz/findings/ and makes
# the script exit 1. Prints per target: executions, coverage, corpus size, result.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
seconds="${1:-60}"
bash scripts/setup.sh >/dev/null
export CCACHE_DIR="${CCACHE_DIR:-$root/.ccache}"
targets=(fuzz_config fuzz_manifest fuzz_safetensors fuzz_bpe_merges fuzz_tokenizer_meta fuzz_token_file)
cmake --preset fuzz >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target "${targets[@]}" >/dev/null
mkdir -p build-fuzz/findings
failed=0
for t in "${targets[@]}"; do
  corpus="build-fuzz/corpus/$t"
  mkdir -p "$corpus"
  cp -n fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null || true
  log="build-fuzz/$t.log"
  if build-fuzz/fuzz/"$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix=build-fuzz/findings/"$t"- "$corpus" >"$log" 2>&1; then
    result="no crash, hang or leak"
  else
    result="FINDING (see $log and build-fuzz/findings/)"
    failed=1
  fi
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  cov="$(grep -oE 'cov: [0-9]+' "$log" | tail -1)"
  printf 'fuzz %-22s %4ss  %10s executions  %-9s corpus %4s files  %s\n' "$t" "$seconds" "${runs:-?}" "${cov:-cov: ?}" \
    "$(ls "$corpus" | wc -l)" "$result"
done
exit $failed
