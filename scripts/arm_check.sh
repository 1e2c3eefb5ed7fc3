#!/usr/bin/env bash
# The Highway kernels on ARM (issue 17 item 6): cross-compiles them, the torch-free libraries they live in
# (precision/, optim/, core/cpu's GEMM decode and conversions) and their torch-free exact tests for aarch64 with
# Debian's cross GCC, and runs the tests under qemu-user. Not part of CI or scripts/test.sh: emulation proves
# that the kernels compile for ARM and give the scalar rules' bits there, not how fast they are.
#
#   scripts/arm_check.sh [--no-install] [QEMU_CPU]    QEMU_CPU: qemu's -cpu (default max: NEON + SVE + SVE2)
#
# Installs what is missing (root, Debian 12): g++-aarch64-linux-gnu, qemu-user and, through multiarch
# (dpkg --add-architecture arm64), libhwy-dev:arm64 and libgtest-dev:arm64. Builds into build-arm64/ (git-ignored
# by /build*/; objects are rebuilt only when a source or header they include changed), then runs every test
# binary with `qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu QEMU_CPU`, prints the Highway targets compiled and
# the ones this emulated CPU runs (the tests force each of them), and a line per test binary; with -cpu max,
# the target-forcing suites again at 256- and 128-bit SVE vectors (the SVE_256 and SVE2_128 targets run only
# there). Exit 1 on a compile error or a failing test. Logs: build-arm64/*.log. ARM_CHECK_JOBS: parallel
# compiles (default 2). test_gemm_bf16.cpp's torch-free first half is cut out into build-arm64/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
install=1
if [[ "${1:-}" == "--no-install" ]]; then install=0; shift; fi
qemu_cpu="${1:-max}"
out=build-arm64
jobs="${ARM_CHECK_JOBS:-2}"

# ---- tools ------------------------------------------------------------------------------------------------
need=()
command -v aarch64-linux-gnu-g++ >/dev/null || need+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || command -v qemu-aarch64-static >/dev/null || need+=(qemu-user)
dpkg -s libhwy-dev:arm64 >/dev/null 2>&1 || need+=(libhwy-dev:arm64)
dpkg -s libgtest-dev:arm64 >/dev/null 2>&1 || need+=(libgtest-dev:arm64)
if ((${#need[@]})); then
  if ((!install)); then echo "arm_check: missing ${need[*]} (run without --no-install)" >&2; exit 1; fi
  sudo=""; [[ $(id -u) -ne 0 ]] && sudo=sudo
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then $sudo dpkg --add-architecture arm64; fi
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${need[@]}"
fi
qemu="$(command -v qemu-aarch64 || command -v qemu-aarch64-static)"
cxx=aarch64-linux-gnu-g++

# ---- sources ----------------------------------------------------------------------------------------------
# As the CMake build compiles them (compile_commands.json), less -march=native: the ARM baseline (armv8-a) is
# what a distribution ships, and Highway adds NEON/SVE/SVE2 per target and dispatches at run time.
common=(-std=gnu++20 -O3 -DNDEBUG -fPIC -DHWY_SHARED_DEFINE -DNIBBLE_HAVE_HWY=1 -I"$root"
        -Wall -Wextra -Werror -Wno-restrict)
hwy_srcs=(precision/cpu/encode_rne_lanes.cpp precision/cpu/block_amax_lanes.cpp precision/cpu/rht_lanes.cpp
          precision/cpu/quest_lanes.cpp precision/cpu/transpose_lanes.cpp precision/cpu/simd_targets.cpp
          optim/cpu/dynamic_map_hwy.cpp optim/cpu/e4m3_decode_hwy.cpp
          core/cpu/gemm_bf16_lanes.cpp core/cpu/decode_bf16_hwy.cpp)
precision_srcs=(precision/format_names.cpp precision/delayed_scaling.cpp precision/cpu/convert_cpu.cpp
                precision/cpu/quantize_cpu.cpp precision/cpu/quantize_tiles.cpp)
optim_srcs=(optim/state_codec.cpp optim/dynamic_map.cpp optim/lr_schedule.cpp optim/serialize.cpp
            optim/cpu/dynamic_map_lanes.cpp optim/cpu/fused_step_cpu.cpp optim/cpu/grad_check_cpu.cpp)
core_srcs=(core/cpu/decode_bf16.cpp core/cpu/f32_to_bf16.cpp core/cpu/gemm_bf16.cpp)
# test binary name : source : extra flags (optim/'s tests inline its scalar rules: -ffp-contract=off as there)
tests=(
  "test_encode_rne_lanes:tests/precision/test_encode_rne_lanes.cpp:"
  "test_tile_lanes:tests/precision/test_tile_lanes.cpp:"
  "test_format:tests/precision/test_format.cpp:"
  "test_convert:tests/precision/test_convert.cpp:"
  "test_philox:tests/precision/test_philox.cpp:"
  "test_state_lanes:tests/optim/test_state_lanes.cpp:-ffp-contract=off"
  "test_state_codecs:tests/optim/test_state_codecs.cpp:-ffp-contract=off"
  "test_decode_bf16:tests/core/test_decode_bf16.cpp:"
  "test_f32_to_bf16:tests/core/test_f32_to_bf16.cpp:"
  "test_fused_step:tests/optim/test_fused_step.cpp:-ffp-contract=off"
  # test_gemm_bf16's kernel half (gemm_bf16_tn's kernels, HwyAgreesBitForBitOnEveryTarget), cut out below: its
  # second half tests core::gemm on torch tensors.
  "test_gemm_bf16_kernels:$out/test_gemm_bf16_kernels.cpp:"
)

flags_for() {  # a library source's flags beyond `common`
  case "$1" in
    optim/cpu/*_hwy.cpp|precision/cpu/*_lanes.cpp|precision/cpu/simd_targets.cpp|core/cpu/*_hwy.cpp|core/cpu/*_lanes.cpp) ;;
    optim/*) echo "-fopenmp -ffp-contract=off -fno-math-errno" ;;
    *) echo "-fopenmp" ;;
  esac
}

mkdir -p "$out"
log="$out/build.log"; : >"$log"
# Rebuild $obj when it is missing or older than any file in its dependency list (-MMD).
stale() {
  local obj="$1" dep="$1.d"
  [[ -f "$obj" && -f "$dep" ]] || return 0
  local f
  for f in $(sed -e 's/^[^:]*://' -e 's/\\$//' "$dep"); do [[ "$f" -nt "$obj" ]] && return 0; done
  return 1
}
compile() {  # src obj flags...
  local src="$1" obj="$2"; shift 2
  stale "$obj" || return 0
  mkdir -p "$(dirname "$obj")"
  echo "$cxx $* -c $src" >>"$log"
  "$cxx" "${common[@]}" "$@" -MMD -MF "$obj.d" -c "$src" -o "$obj" >>"$log" 2>&1 ||
    { echo "arm_check: FAILED to compile $src (see $log)"; tail -40 "$log"; return 1; }
}
pids=(); failed=0
run_limited() {  # at most $jobs compiles at once
  "$@" &
  pids+=($!)
  if ((${#pids[@]} >= jobs)); then wait "${pids[0]}" || failed=1; pids=("${pids[@]:1}"); fi
}
drain() { local p; for p in "${pids[@]}"; do wait "$p" || failed=1; done; pids=(); }

# Everything before test_gemm_bf16.cpp's "---- core::gemm" line, less its torch-side includes, and the
# namespaces closed (rewritten only when the cut changes, so that it is not recompiled every run).
gemm_test=tests/core/test_gemm_bf16.cpp
grep -q '^// ---- core::gemm ' "$gemm_test" || { echo "arm_check: $gemm_test has no '// ---- core::gemm' line"; exit 1; }
{ sed -e '/^\/\/ ---- core::gemm /,$d' -e '/#include "core\/gemm.h"/d' -e '/#include "precision\/quantize.h"/d' "$gemm_test"
  printf '}  // namespace\n}  // namespace nibble::core\n'; } >"$out/test_gemm_bf16_kernels.cpp.new"
if cmp -s "$out/test_gemm_bf16_kernels.cpp.new" "$out/test_gemm_bf16_kernels.cpp"; then
  rm "$out/test_gemm_bf16_kernels.cpp.new"
else
  mv "$out/test_gemm_bf16_kernels.cpp.new" "$out/test_gemm_bf16_kernels.cpp"
fi

echo "arm_check: compiling for aarch64 into $out/ ($cxx $($cxx -dumpfullversion), Highway $(dpkg-query -W -f='${Version}' libhwy-dev:arm64))"
for src in "${hwy_srcs[@]}" "${precision_srcs[@]}" "${optim_srcs[@]}" "${core_srcs[@]}"; do
  # shellcheck disable=SC2046
  run_limited compile "$src" "$out/obj/${src%.cpp}.o" $(flags_for "$src")
done
for t in "${tests[@]}"; do
  IFS=: read -r name src extra <<<"$t"
  # shellcheck disable=SC2086
  run_limited compile "$src" "$out/obj/${src%.cpp}.o" -fPIE -fopenmp -DGTEST_HAS_PTHREAD=1 $extra
done
drain
((failed)) && exit 1
objs() { local s; for s in "$@"; do echo "$out/obj/${s%.cpp}.o"; done; }
rm -f "$out/libnibble_arm.a"
# shellcheck disable=SC2046
aarch64-linux-gnu-ar rcs "$out/libnibble_arm.a" $(objs "${hwy_srcs[@]}" "${precision_srcs[@]}" "${optim_srcs[@]}" "${core_srcs[@]}")
for t in "${tests[@]}"; do
  IFS=: read -r name src extra <<<"$t"
  "$cxx" -fopenmp -o "$out/$name" "$out/obj/${src%.cpp}.o" "$out/libnibble_arm.a" \
    -lgtest_main -lgtest -lhwy -lpthread >>"$log" 2>&1 || { echo "arm_check: FAILED to link $name"; tail -20 "$log"; exit 1; }
done

# ---- run --------------------------------------------------------------------------------------------------
# One glibc: the cross toolchain's (/usr/aarch64-linux-gnu/lib, what the tests link against). libhwy:arm64 and
# libgtest:arm64 pull in multiarch's libc6:arm64 (/lib/aarch64-linux-gnu), and with the -L prefix alone the
# loader came from one and libc from the other: the first thread creation spun for ever in pthread_create.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
qemu_run() {  # cpu binary args...: under qemu-user, as an aarch64 machine would run it
  local cpu="$1"; shift
  "$qemu" -L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH=/usr/aarch64-linux-gnu/lib -cpu "$cpu" "$@"
}
# The compiled and runnable targets, through precision's simd_targets (the list the tests force).
cat >"$out/targets.cpp" <<'EOF'
#include <sys/prctl.h>
#include <cstdio>
#include "precision/cpu/simd_targets.h"
int main() {
  namespace s = nibble::precision::simd;
  const int vl = prctl(PR_SVE_GET_VL);
  if (vl >= 0) std::printf("SVE vector length %d bits; ", (vl & PR_SVE_VL_LEN_MASK) * 8); else std::printf("no SVE; ");
  std::printf("compiled:");
  for (int64_t t = s::compiled_targets(); t != 0; t &= t - 1) std::printf(" %s", s::target_name(t & -t));
  std::printf("\nrunnable:");
  for (int64_t t : s::runnable_targets()) std::printf(" %s", s::target_name(t));
  std::printf("\n");
}
EOF
"$cxx" "${common[@]}" -o "$out/targets" "$out/targets.cpp" "$out/libnibble_arm.a" -lhwy >>"$log" 2>&1
echo "arm_check: qemu $("$qemu" --version | head -1 | sed 's/.*version //'), -cpu $qemu_cpu"
qemu_run "$qemu_cpu" "$out/targets" | sed 's/^/arm_check: highway targets, /'
echo "arm_check: (block_amax_lanes, rht_lanes and quest_lanes are compiled for NEON only on ARM: SVE's vectors"
echo "arm_check:  cannot be array elements; their dispatch takes NEON where an SVE target is forced)"
status=0
run_test() {  # cpu binary label [VAR=value...] [-- gtest args]: runs build-arm64/binary under qemu, one line
  local cpu="$1" name="$2" label="$3"; shift 3
  local envs=() args=()
  while (($#)); do if [[ $1 == -- ]]; then shift; args=("$@"); break; fi; envs+=("$1"); shift; done
  local tlog="$out/$label.log" start result passed failed_n skipped
  start=$(date +%s)
  if env "${envs[@]}" "$qemu" -L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH=/usr/aarch64-linux-gnu/lib -cpu "$cpu" \
       "$out/$name" "${args[@]}" >"$tlog" 2>&1; then result=ok; else result=FAILED; status=1; fi
  passed="$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$tlog")"
  failed_n="$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$tlog")"
  skipped="$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$tlog")"
  printf 'arm_check: %-32s %-6s passed %4s  failed %3s  skipped %3s  (%ss under qemu)\n' "$label" "$result" \
    "${passed:-0}" "${failed_n:-0}" "${skipped:-0}" "$(($(date +%s) - start))"
  [[ $result == ok ]] || grep -E '^\[  FAILED  \]|Failure|Expected|Which is|actual' "$tlog" | head -20 || true
  return 0
}
for t in "${tests[@]}"; do
  IFS=: read -r name src extra <<<"$t"
  run_test "$qemu_cpu" "$name" "$name"
done
# test_fused_step again on DRE's other division (ARM's default is the reciprocal; both must be exact).
run_test "$qemu_cpu" test_fused_step test_fused_step.dre_division NIBBLE_DRE_RECIPROCAL=0
# The fixed-length SVE targets run only at their vector length (SVE_256 at 256 bits, SVE2_128 at 128; qemu's
# max CPU defaults to 512): the suites that force every target again at those lengths.
if [[ $qemu_cpu == max ]]; then
  for vl_bytes in 32 16; do
    cpu="max,sve-default-vector-length=$vl_bytes"
    qemu_run "$cpu" "$out/targets" | sed "s/^/arm_check: -cpu $cpu: highway targets, /"
    for name in test_encode_rne_lanes test_tile_lanes test_state_lanes test_decode_bf16; do
      run_test "$cpu" "$name" "$name.sve$((vl_bytes * 8))"
    done
    run_test "$cpu" test_gemm_bf16_kernels "test_gemm_bf16_kernels.sve$((vl_bytes * 8))" -- \
      --gtest_filter='*HwyAgreesBitForBitOnEveryTarget*'
  done
fi
exit $status
