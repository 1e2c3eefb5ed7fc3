#!/usr/bin/env bash
# One command for a GPU machine (issue 15): builds what the GPU checks need for the GPU present, runs every
# GPU test, a short nibble-train job and the GPU GEMM benchmark, and writes OUT_DIR/summary.txt plus the logs.
#
#   scripts/gpu_check.sh OUT_DIR                 # on a machine with an NVIDIA GPU
#   scripts/gpu_check.sh --build-only OUT_DIR    # configure + build only (a machine without a GPU: set
#                                                #   NIBBLE_CUDA_ARCH, e.g. NIBBLE_CUDA_ARCH=90a)
#
# Needs: nvcc (CUDA 12.x or 13), CMake >= 3.25, ninja, a C++ compiler, and a Python with a CUDA build of torch
# (PYTHON, else .venv/bin/python, else python3). The third-party code (CLI11, toml++, nlohmann-json,
# spdlog/fmt, zlib, GoogleTest, Open MPI) comes from .gpu_deps/, which scripts/gpu_deps.sh makes on a
# machine with the Debian packages; carry it along (it is git-ignored). Without that folder the system's
# packages are used. Nothing is downloaded.
#
# What it does, within about 8 minutes on one H100 with 16 cores (the build takes most of it):
#   1. env.log: GPU (nvidia-smi), driver and CUDA versions, toolkit, compiler, torch. No GPU: says so in
#      summary.txt and exits 2 without building (unless --build-only).
#   2. build.log: Release build in build-gpucheck/ (NIBBLE_GPU_BUILD_DIR) with ninja on all cores, for this
#      GPU's compute capability only (sm_90 -> 90a, sm_100 -> 100a, ...; NIBBLE_CUDA_ARCH overrides), only
#      the targets below, without the Python module. Warnings are counted, not errors (the GPU machine's
#      compiler may not be CI's GCC 12): NIBBLE_WERROR=ON makes them errors.
#   3. tests.log: `ctest -L gpu` (test_cuda_vs_cpu, test_optim_cuda_vs_cpu, test_gemm_cuda, core/'s and the
#      torch optimizer's CUDA-vs-CPU tests, nibble-train on cuda vs cpu (tests/launch/train_cuda_vs_cpu.py), the
#      NCCL communicator under mpirun -np 2 and 4), then the NCCL test under mpirun -np 1. On a GPU machine a GPU
#      test that reports "skipped" counts as a failure, except an NCCL run with more ranks than GPUs (NCCL
#      needs one GPU per rank).
#   4. train.log: `nibble-train prepare` on data/kjv.txt or the repository's docs, then
#      examples/configs/tiny.toml in bf16 and in the GPU's best recipe (fp8_current on sm_89/sm_90, nvfp4 on
#      sm_100+), with --train.device cuda where the trainer knows that key; the device used is recorded.
#   5. bench.log: benchmarks/bench_gemm_cuda (nibble's cuBLASLt paths) against torch's bf16 matmul (and
#      torch._scaled_mm FP8) on the same GPU and shapes.
# On this project's device tool: carry [".gpu_deps"] and run `scripts/gpu_check.sh $OUT`.
# Environment: NIBBLE_CUDA_ARCH (e.g. 90a), NIBBLE_GPU_BUILD_DIR, NIBBLE_DEPS_DIR (default .gpu_deps; empty:
# system packages), NIBBLE_GPU_CHECK_SECONDS (the time budget, default 470), NIBBLE_BENCH_SHAPES (MxNxK,...),
# NIBBLE_WERROR, PYTHON. NIBBLE_DEPS_ONLY=1 makes CMake ignore /, /usr and /usr/local (to prove, on a machine
# with the Debian packages, that .gpu_deps alone suffices). NIBBLE_GPU_CHECK_FORCE=1 runs every step without a
# GPU too (to test this script: the GPU steps then fail; NIBBLE_TRAIN_DEVICE=cpu lets training pass there).
# Exit status: 0 everything passed, 1 something failed, 2 no GPU (nothing ran), 3 bad usage or set-up.
# OUT_DIR holds at most 6 files (the device tool returns 8): summary.txt, env.log, build.log, tests.log,
# train.log, bench.log.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

build_only=0
if [[ "${1:-}" == "--build-only" ]]; then build_only=1; shift; fi
if [[ $# -ne 1 ]]; then
  echo "usage: scripts/gpu_check.sh [--build-only] OUT_DIR" >&2
  exit 3
fi
out="$(mkdir -p "$1" && cd "$1" && pwd)" || { echo "gpu_check: cannot create $1" >&2; exit 3; }
rm -f "$out"/{summary.txt,env.log,build.log,tests.log,train.log,bench.log}
bdir="${NIBBLE_GPU_BUILD_DIR:-$root/build-gpucheck}"
work="$bdir/gpu_check_work"
t0=$(date +%s)
deadline=$((t0 + ${NIBBLE_GPU_CHECK_SECONDS:-470}))  # the whole run, build included, on the GPU machine
((build_only)) && deadline=$((t0 + 86400))            # a build on a small machine takes what it takes

summary=()   # lines of summary.txt's step table
n_pass=0 n_fail=0 n_skip=0
note() { echo "[gpu_check] $*"; }
# row STEP STATUS SECONDS [NOTES]: a line of the table; statuses ok/passed count as passed, skipped as an
# expected skip, FAILED/SKIPPED as failures, anything else is not counted.
row() {
  summary+=("$(printf '%-34s %-8s %6s  %s' "$1" "$2" "$3" "${4:-}")")
  case "$2" in
    ok | passed) n_pass=$((n_pass + 1)) ;;
    skipped) n_skip=$((n_skip + 1)) ;;
    FAILED | SKIPPED) n_fail=$((n_fail + 1)) ;;
  esac
}
since() { echo $(($(date +%s) - $1)); }
# Seconds a step may take: at most $1, and leave $2 for the steps after it (never under 20).
budget() {
  local left=$((deadline - $(date +%s) - $2))
  ((left > $1)) && left=$1
  ((left < 20)) && left=20
  echo "$left"
}
# run LOG SECONDS CMD...: appends the command and its output to LOG, under a time limit.
run() {
  local log="$1" secs="$2"
  shift 2
  printf '\n$ %s   (limit %ss)\n' "$*" "$secs" >>"$log"
  timeout --kill-after=10 "$secs" "$@" >>"$log" 2>&1
  local rc=$?
  ((rc == 124 || rc == 137)) && echo "[gpu_check] TIMED OUT after ${secs}s" >>"$log"
  echo "[exit $rc]" >>"$log"
  return $rc
}

# ---- 1. the machine ----------------------------------------------------------------------------------------
env_log="$out/env.log"
python=""
for cand in "${PYTHON:-}" "$root/.venv/bin/python" python3; do
  [[ -n "$cand" ]] && command -v "$cand" >/dev/null 2>&1 || continue
  if timeout 120 "$cand" -c "import torch" >/dev/null 2>&1; then python="$(command -v "$cand")"; break; fi
done
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "host: $(uname -n) | $(uname -srm) | $(nproc) cores | $(free -g 2>/dev/null | awk '/^Mem:/{print $2 " GiB memory"}')"
  if git -C "$root" rev-parse --short HEAD >/dev/null 2>&1; then
    echo "commit: $(git -C "$root" rev-parse --short HEAD) ($(git -C "$root" status --porcelain | wc -l) changed files)"
  else
    echo "commit: unknown (no git checkout)"
  fi
} >"$env_log"
run "$env_log" 30 nvidia-smi
# Only well-formed rows ("name, 9.0, driver, memory"): a failing nvidia-smi prints its error on stdout.
gpu_query="$(timeout 30 nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv,noheader 2>/dev/null |
             grep -E '^[^,]+, *[0-9]+\.[0-9]+ *,')"
gpu_count=$(grep -c . <<<"$gpu_query")
driver_cuda="$(timeout 30 nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -1)"
nvcc="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)"  # CMake looks in /usr/local/cuda too
run "$env_log" 30 "$nvcc" --version
run "$env_log" 30 cmake --version
run "$env_log" 30 ninja --version
run "$env_log" 30 c++ --version
torch_info=""
if [[ -n "$python" ]]; then
  torch_info="$(timeout 120 "$python" - 2>>"$env_log" <<'EOF'
import torch
n = torch.cuda.device_count() if torch.cuda.is_available() else 0
cap = "%d.%d" % torch.cuda.get_device_capability(0) if n else "-"
name = torch.cuda.get_device_name(0) if n else "-"
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}) | cuda available {torch.cuda.is_available()} | "
      f"devices {n} | {name} | capability {cap}")
EOF
)"
fi
{
  echo "python: ${python:-none with torch}"
  echo "torch: ${torch_info:-not importable}"
  echo "nvidia-smi --query-gpu: ${gpu_query:-none}"
} >>"$env_log"
if ((gpu_count == 0)) && [[ "$torch_info" =~ devices\ ([1-9][0-9]*) ]]; then gpu_count=${BASH_REMATCH[1]}; fi

gpu_name="$(head -1 <<<"$gpu_query" | cut -d, -f1 | xargs)"
cc="$(head -1 <<<"$gpu_query" | cut -d, -f2 | xargs)"
driver="$(head -1 <<<"$gpu_query" | cut -d, -f3 | xargs)"
if [[ -z "$cc" && "$torch_info" =~ capability\ ([0-9]+\.[0-9]+) ]]; then cc=${BASH_REMATCH[1]}; fi
if [[ -z "$gpu_name" && "$torch_info" =~ devices\ [0-9]+\ \|\ ([^|]*)\ \| ]]; then gpu_name=${BASH_REMATCH[1]}; fi
nvcc_version="$("$nvcc" --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\), V\([0-9.]*\).*/\2/p')"
sm=""
[[ -n "$cc" ]] && sm="${cc/./}"
arch="${NIBBLE_CUDA_ARCH:-}"
if [[ -z "$arch" && -n "$sm" ]]; then
  arch="$sm"
  ((sm >= 90)) && arch="${sm}a"  # arch-specific target for exactly this GPU (Hopper and later)
fi

deps="${NIBBLE_DEPS_DIR-$root/.gpu_deps}"
[[ -n "$deps" && ! -f "$deps/MANIFEST.txt" ]] && deps=""
# Executable bits may be lost on the way to the GPU machine: the carried Open MPI's programs need them.
[[ -n "$deps" && -d "$deps/openmpi/bin" && ! -x "$deps/openmpi/bin/mpirun" ]] && chmod +x "$deps"/openmpi/bin/*

mode="scripts/gpu_check.sh"
((build_only)) && mode+=" --build-only"
if [[ -n "$deps" ]]; then third_party="$deps ($(grep -m1 "^openmpi:" "$deps/MANIFEST.txt"), header-only CLI11/toml++/json/spdlog+fmt, zlib, gtest)"; else third_party="system packages (no .gpu_deps)"; fi
write_summary() {  # $1: overall result line
  {
    echo "nibble GPU check ($mode) -- $(head -1 "$env_log" | cut -d' ' -f2-)"
    echo "RESULT: $1"
    echo
    echo "device:    ${gpu_name:-none} | compute capability ${cc:-?} | $gpu_count GPU(s) | built for ${arch:-?}"
    echo "driver:    ${driver:-?} (supports CUDA ${driver_cuda:-?}) | toolkit nvcc ${nvcc_version:-?} | ${torch_info:-torch not importable}"
    echo "machine:   $(sed -n 's/^host: //p' "$env_log") | commit $(sed -n 's/^commit: //p' "$env_log")"
    echo "3rd party: $third_party"
    echo
    printf '%-34s %-8s %6s  %s\n' step status seconds notes
    printf '%s\n' "${summary[@]}"
    echo
    echo "total: $(since "$t0") s. Logs beside this file: $(cd "$out" && ls *.log 2>/dev/null | paste -sd" ")"
    echo "gpu_check: $n_pass passed, $n_fail failed, $n_skip skipped"
  } >"$out/summary.txt"
  cat "$out/summary.txt"
}

if ((gpu_count == 0 && !build_only)) && [[ "${NIBBLE_GPU_CHECK_FORCE:-0}" != 1 ]]; then
  row "gpu detection" "none" 0 "nvidia-smi: $(command -v nvidia-smi >/dev/null && echo 'no GPU listed' || echo 'not installed'); torch: ${torch_info:-not importable}"
  write_summary "NOT RUN: no NVIDIA GPU on this machine, so nothing was built or run (scripts/gpu_check.sh needs a GPU; --build-only builds without one)"
  exit 2
fi
if [[ -z "$arch" ]]; then
  row "gpu detection" "failed" 0 "no compute capability (nvidia-smi, torch); set NIBBLE_CUDA_ARCH"
  write_summary "FAILED: unknown CUDA architecture"
  exit 3
fi
if [[ -z "$python" ]]; then
  row "python/torch" "failed" 0 "no Python with torch (tried \$PYTHON, .venv/bin/python, python3)"
  write_summary "FAILED: no Python with torch"
  exit 3
fi
note "${gpu_name:-no GPU}, compute capability ${cc:-?}: building for $arch in $bdir"

# ---- 2. configure + build ------------------------------------------------------------------------------------
build_log="$out/build.log"
cmake_args=(-S "$root" -B "$bdir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DNIBBLE_CUDA=ON
            -DCMAKE_CUDA_ARCHITECTURES="$arch" -DNIBBLE_PYTHON=OFF -DNIBBLE_TESTS=ON -DNIBBLE_BENCHMARKS=ON
            -DPython3_EXECUTABLE="$python" -DNIBBLE_DEPS_DIR="$deps" -DNIBBLE_WERROR="${NIBBLE_WERROR:-OFF}")
if command -v ccache >/dev/null 2>&1; then
  export CCACHE_DIR="${CCACHE_DIR:-$root/.ccache}"
  cmake_args+=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache
               -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
# NIBBLE_DEPS_ONLY=1: find nothing under /, /usr or /usr/local (a check, on a machine that has the Debian
# packages, that the carried folder alone suffices).
[[ "${NIBBLE_DEPS_ONLY:-0}" == 1 ]] && cmake_args+=("-DCMAKE_IGNORE_PREFIX_PATH=/;/usr;/usr/local")
s=$(date +%s)
if run "$build_log" "$(budget 120 330)" cmake "${cmake_args[@]}"; then
  row "configure" "ok" "$(since "$s")" "$bdir, CUDA $arch, Release, ninja"
else
  row "configure" "FAILED" "$(since "$s")" "see build.log"
  write_summary "FAILED: CMake configure"
  exit 1
fi
targets=(test_cuda_vs_cpu test_optim_cuda_vs_cpu test_gemm_cuda test_core_cuda_vs_cpu test_torch_optimizer_cuda
         nibble-train bench_gemm_cuda)
all_targets="$(ninja -C "$bdir" -t targets all 2>/dev/null)"
grep -q '^test_nccl_communicator:' <<<"$all_targets" && targets+=(test_nccl_communicator)
s=$(date +%s)
touch "$bdir/gpu_check.build-start"
build_limit="$(budget 420 150)"
((build_only)) && build_limit=86400  # a build on a small machine takes what it takes
run "$build_log" "$build_limit" cmake --build "$bdir" --parallel "$(nproc)" --target "${targets[@]}" -- -k 0
build_rc=$?
missing=()
for t in "${targets[@]}"; do  # bin_<target>: the program, if this build made it or found it up to date
  f="$(find "$bdir" -name "$t" -type f -perm -u+x 2>/dev/null | head -1)"
  # After a failed build an older binary may be stale (its target may be the one that failed): not used.
  [[ -n "$f" ]] && ((build_rc != 0)) && [[ ! "$f" -nt "$bdir/gpu_check.build-start" ]] && f=""
  [[ -z "$f" ]] && missing+=("$t")
  printf -v "bin_${t//-/_}" '%s' "$f"
done
if ((build_rc == 0)); then
  row "build" "ok" "$(since "$s")" "${targets[*]} ($(nproc) jobs)"
else
  row "build" "FAILED" "$(since "$s")" "exit $build_rc; not built: ${missing[*]:-none} (build.log)"
fi
# Warnings are not errors here (another compiler than CI's may warn where GCC 12 does not): counted instead.
warnings=$(grep -c -E '(: warning: |: warning #|^Warning: )' "$build_log")
((warnings)) && row "compiler warnings" "$warnings" "" "not errors in this build (NIBBLE_WERROR=OFF): see build.log"
grep -q "NCCL backend ON" "$build_log" || row "nccl backend" "absent" 0 "no libnccl/nccl.h found: the NCCL test was not built"

if ((build_only)); then
  result="build only: $( ((build_rc == 0)) && echo ok || echo FAILED ); no test ran"
  write_summary "$result"
  ((build_rc == 0)) && exit 0 || exit 1
fi

mpirun="$(sed -n 's/^MPIEXEC_EXECUTABLE:FILEPATH=//p' "$bdir/CMakeCache.txt")"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_pml=ob1 OMPI_MCA_mpi_yield_when_idle=1

# ---- 3. GPU tests ------------------------------------------------------------------------------------------
tests_log="$out/tests.log"
s=$(date +%s)
run "$tests_log" "$(budget 240 120)" ctest --test-dir "$bdir" -L gpu --output-on-failure --timeout 120
ctest_rc=$?
test_rows=()
passed=0 failed=0
while read -r name status; do
  np=""
  [[ "$name" =~ ^parallel\.nccl_communicator\.np([0-9]+)$ ]] && np=${BASH_REMATCH[1]}
  case "$status" in
    Passed) passed=$((passed + 1)); test_rows+=("$name|passed|") ;;
    Skipped)
      if [[ -n "$np" ]] && ((np > gpu_count)); then
        test_rows+=("$name|skipped|expected: NCCL needs one GPU per rank ($np ranks, $gpu_count GPU)")
      else
        failed=$((failed + 1)); test_rows+=("$name|SKIPPED|a skip on a GPU machine is a failure (did CUDA start? tests.log)")
      fi ;;
    *) failed=$((failed + 1)); test_rows+=("$name|FAILED|$status (tests.log)") ;;
  esac
done < <(sed -nE 's/^ *[0-9]+\/[0-9]+ +Test +#[0-9]+: +([^ ]+) +\.*(\*\*\*)? *([A-Za-z][A-Za-z: ]*[A-Za-z]) +[0-9.]+ sec.*/\1 \3/p' "$tests_log")
summary+=("$(printf '%-34s %-8s %6s  %s' "gpu tests (ctest -L gpu)" "$( ((failed)) && echo failed || echo ok)" "$(since "$s")" \
  "${#test_rows[@]} tests, ctest exit $ctest_rc")")
((${#test_rows[@]} == 0)) && row "  (no test ran)" "FAILED" "" "ctest exit $ctest_rc (tests.log)"
for r in "${test_rows[@]}"; do IFS='|' read -r name status why <<<"$r"; row "  $name" "$status" "" "$why"; done
# NCCL on one GPU: the same test under mpirun -np 1 (the -np 2 and -np 4 runs need 2 and 4 GPUs).
if [[ -n "${bin_test_nccl_communicator:-}" && -n "$mpirun" ]]; then
  s=$(date +%s)
  run "$tests_log" "$(budget 60 110)" "$mpirun" -np 1 --bind-to none "$bin_test_nccl_communicator"
  case $? in
    0) row "nccl communicator np1" "passed" "$(since "$s")" ;;
    77) row "nccl communicator np1" "SKIPPED" "$(since "$s")" "on a GPU machine: a failure (tests.log)" ;;
    *) row "nccl communicator np1" "FAILED" "$(since "$s")" "tests.log" ;;
  esac
fi

# ---- 4. a short nibble-train job -----------------------------------------------------------------------------
train_log="$out/train.log"
recipes=(bf16)
train_device="${NIBBLE_TRAIN_DEVICE:-cuda}"
if [[ -n "$sm" ]] && ((sm >= 100)); then recipes+=(nvfp4); elif [[ -n "$sm" ]] && ((sm >= 89)); then recipes+=(fp8_current); fi
if [[ -n "${bin_nibble_train:-}" ]]; then
  mkdir -p "$work"
  if [[ -s "$root/data/kjv.txt" ]]; then corpus="$root/data/kjv.txt"; else
    corpus="$work/corpus.txt"
    cat "$root/README.md" "$root"/docs/*.md "$root"/*/README.md >"$corpus" 2>/dev/null
  fi
  s=$(date +%s)
  if run "$train_log" 60 "$bin_nibble_train" prepare --input "$corpus" --out "$work/tokens"; then
    row "train: prepare" "ok" "$(since "$s")" "$(basename "$corpus"), $(wc -c <"$corpus") bytes, byte tokens"
    for recipe in "${recipes[@]}"; do
      s=$(date +%s)
      rm -rf "$work/run_$recipe"
      args=(--config "$root/examples/configs/tiny.toml" --data.train "$work/tokens/train.bin"
            --data.val "$work/tokens/val.bin" --train.out_dir "$work/run_$recipe" --model.recipe "$recipe")
      mark=$(wc -l <"$train_log")
      run "$train_log" "$(budget 90 100)" "$bin_nibble_train" "${args[@]}" --train.device "$train_device"
      rc=$?
      device="--train.device $train_device"
      if ((rc != 0)) && tail -n +"$mark" "$train_log" | grep -q "unknown key 'train.device'"; then
        device="the default device (this trainer has no train.device key: CPU)"
        mark=$(wc -l <"$train_log")
        run "$train_log" "$(budget 90 100)" "$bin_nibble_train" "${args[@]}"
        rc=$?
      fi
      # What the trainer says it ran on: its "device: ..." line (device and GEMM paths), else any mention.
      said="$(tail -n +"$mark" "$train_log" | grep -m1 '^device:' | cut -c1-220)"
      [[ -z "$said" ]] && said="$(tail -n +"$mark" "$train_log" | grep -m1 -ioE '(device|gpu|cuda)[^|;,]*' | head -1)"
      result="$(tail -n +"$mark" "$train_log" | grep -m1 '^steps ' | grep -oE 'train loss [^|]*\| held-out loss [0-9.]*|[0-9.]+ s, [0-9]+ tokens/s' | paste -sd';' | sed 's/;/; /g')"
      if ((rc == 0)); then
        row "train: $recipe" "ok" "$(since "$s")" "asked $device; $result"
        [[ -n "$said" ]] && summary+=("    printed: $said")
      else
        row "train: $recipe" "FAILED" "$(since "$s")" "exit $rc, asked $device (train.log)"
        [[ -n "$said" ]] && summary+=("    printed: $said")
      fi
    done
  else
    row "train: prepare" "FAILED" "$(since "$s")" "train.log"
  fi
else
  row "train" "FAILED" 0 "nibble-train was not built"
fi

# ---- 5. GEMM benchmark: nibble's cuBLASLt paths vs torch's bf16 matmul --------------------------------------
bench_log="$out/bench.log"
shapes="${NIBBLE_BENCH_SHAPES:-4096x4096x4096,8192x8192x8192}"
if [[ -n "${bin_bench_gemm_cuda:-}" ]]; then
  s=$(date +%s)
  run "$bench_log" "$(budget 120 45)" "$bin_bench_gemm_cuda" --shapes "$shapes" --iters 20
  bench_rc=$?
  run "$bench_log" "$(budget 90 5)" "$python" - "$shapes" <<'EOF'
import sys, torch
dev = torch.device("cuda")
def timed(fn, iters=20):
    for _ in range(3): fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(iters): fn()
    b.record(); b.synchronize()
    return a.elapsed_time(b) / iters
for shape in sys.argv[1].split(","):
    m, n, k = map(int, shape.split("x"))
    x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
    w = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
    ms = timed(lambda: torch.matmul(x, w.t()))
    print(f"TORCH kind=bf16_matmul M={m} N={n} K={k} ms={ms:.4f} tflops={2*m*n*k/ms/1e9:.1f}")
    try:  # torch's own FP8 GEMM (per-tensor scales), for reference
        x8, w8 = x.to(torch.float8_e4m3fn), w.to(torch.float8_e4m3fn)
        one = torch.ones((), device=dev)
        ms = timed(lambda: torch._scaled_mm(x8, w8.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16))
        print(f"TORCH kind=fp8_scaled_mm M={m} N={n} K={k} ms={ms:.4f} tflops={2*m*n*k/ms/1e9:.1f}")
    except Exception as e:
        print(f"torch._scaled_mm not available: {type(e).__name__}: {e}")
EOF
  torch_rc=$?
  table="$(awk '
    /^TORCH kind=bf16_matmul/ { split($0, f, /[ =]/); for (i = 1; i < length(f); i++) v[f[i]] = f[i + 1];
                                torch[v["M"] "x" v["N"] "x" v["K"]] = v["tflops"] }
    /^TORCH kind=fp8_scaled_mm/ { split($0, f, /[ =]/); for (i = 1; i < length(f); i++) v[f[i]] = f[i + 1];
                                  fp8[v["M"] "x" v["N"] "x" v["K"]] = v["tflops"] }
    /^RESULT / { n++; line[n] = $0 }
    END {
      for (i = 1; i <= n; i++) {
        split(line[i], f, / /); delete v
        for (j = 2; j <= length(f); j++) { split(f[j], kv, "="); v[kv[1]] = kv[2] }
        shape = v["M"] "x" v["N"] "x" v["K"]; match(line[i], /path="[^"]*"/)
        path = substr(line[i], RSTART + 6, RLENGTH - 7)
        printf "    %-34s %-16s %8s TFLOP/s  %5.2fx torch bf16 (%s)%s\n", v["a"] " x " v["b"], shape, v["tflops"],
               (torch[shape] > 0 ? v["tflops"] / torch[shape] : 0), path,
               (fp8[shape] > 0 ? sprintf(", %.2fx torch fp8", v["tflops"] / fp8[shape]) : "")
      }
      for (s in torch) printf "    %-34s %-16s %8s TFLOP/s  (baseline)\n", "torch bf16 matmul", s, torch[s]
      for (s in fp8) printf "    %-34s %-16s %8s TFLOP/s\n", "torch _scaled_mm e4m3", s, fp8[s]
    }' "$bench_log")"
  if ((bench_rc == 0 && torch_rc == 0)); then
    row "gemm benchmark" "ok" "$(since "$s")" "bench_gemm_cuda vs torch, BF16 output, $shapes:"
  else
    row "gemm benchmark" "FAILED" "$(since "$s")" "bench_gemm_cuda exit $bench_rc, torch exit $torch_rc (bench.log)"
  fi
  [[ -n "$table" ]] && summary+=("$table")
  # Pairs this GPU has no path for (once per pair, with check_gemm's reason).
  na="$(awk '/^n\/a/ && !seen[$2 $3 $4]++ { r = $0; sub(/^n\/a +/, "", r); print "    n/a: " substr(r, 1, 150) }' "$bench_log")"
  [[ -n "$na" ]] && summary+=("$na")
else
  row "gemm benchmark" "FAILED" 0 "bench_gemm_cuda was not built"
fi

if ((n_fail == 0)); then
  write_summary "PASS (every step ran and passed)"
  exit 0
fi
write_summary "FAIL: $n_fail failure(s), see the steps marked FAILED or SKIPPED"
exit 1
