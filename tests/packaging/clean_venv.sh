#!/usr/bin/env bash
# Packaging from a clean venv (issue 16): a new venv that has torch and the other dependencies but no nibble;
# `pip install --no-build-isolation .` into it; `import nibble` from outside the source tree without PYTHONPATH,
# `python -m nibble`, the installed `nibble-train` command (help, a 3-step training run under mpirun -np 2, the
# plot subcommand written in Python); then the same with an editable install (`pip install -e .`).
# Usage: tests/packaging/clean_venv.sh SOURCE_DIR BUILD_DIR
# BUILD_DIR is reused as pip's build-dir (already built: pip re-runs CMake and compiles nothing), as CI time needs.
# "A venv that has torch": a fresh venv whose only extra path (a .pth file) is a folder of links to the project
# venv's installed distributions minus nibble's own, so torch is not downloaded again (2 GB) and the venv does
# not see the project's installed nibble.
set -euo pipefail
src="$(cd "$1" && pwd)"
build="$(cd "$2" && pwd)"
work="$(mktemp -d /tmp/nibble-clean-venv.XXXXXX)"
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

python3 -m venv "$work/venv"
py="$work/venv/bin/python"
site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
project_site="$("$src/.venv/bin/python3" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
mkdir "$work/deps"
for entry in "$project_site"/*; do
  name="$(basename "$entry")"
  case "$name" in
    nibble | nibble-*.dist-info | _nibble_launcher | _nibble* | *nibble*.pth | __pycache__) continue ;;
  esac
  ln -s "$entry" "$work/deps/$name"
done
echo "$work/deps" >"$site/project-dependencies.pth"

cd "$work"  # away from the source tree: nothing may be imported from there by accident
"$py" -c "import torch" || fail "the clean venv cannot import torch through $work/deps"
if "$py" -c "import nibble" 2>/dev/null; then fail "the clean venv imports nibble before it is installed"; fi

check_installed() {  # $1: where nibble's __init__.py must be
  local expect="$1"
  "$py" - "$expect" "$src" <<'PY' || fail "import nibble"
import os, re, sys
import nibble, torch
expect, src = sys.argv[1], sys.argv[2]
assert os.path.abspath(nibble.__file__).startswith(expect), f"nibble imported from {nibble.__file__}, not {expect}"
version = re.search(r"project\(nibble VERSION ([0-9.]+)", open(os.path.join(src, "CMakeLists.txt")).read()).group(1)
assert nibble.__version__ == version, (nibble.__version__, version)
q = nibble.quantize(torch.randn(32, 64), "mxfp8")  # the extension works, not just the import
assert q.dequantize().shape == (32, 64)
print("import nibble", nibble.__version__, "from", os.path.dirname(nibble.__file__))
PY
  "$py" -m nibble | tee "$work/report.txt"
  grep -q "^nibble [0-9]" "$work/report.txt" || fail "python -m nibble printed no version line"
  [[ -x "$work/venv/bin/nibble-train" ]] || fail "no nibble-train in $work/venv/bin"
  "$work/venv/bin/nibble-train" --help >"$work/help.txt" || fail "nibble-train --help exited $?"
  grep -q "nibble-train" "$work/help.txt" || fail "nibble-train --help printed no usage"
  # A real run of the installed command on 2 ranks.
  head -c 300000 "$src/data/kjv.txt" >"$work/corpus.txt"
  "$work/venv/bin/nibble-train" prepare --input "$work/corpus.txt" --out "$work/tokens" >/dev/null
  rm -rf "$work/run"
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_pml=ob1 OMP_NUM_THREADS=1 \
    mpirun -np 2 --oversubscribe --bind-to none "$work/venv/bin/nibble-train" --config "$src/examples/configs/tiny.toml" \
    --data.train "$work/tokens/train.bin" --data.val "$work/tokens/val.bin" --train.out_dir "$work/run" \
    --parallel.dp 2 --train.steps 3 --train.threads 1 --model.recipe nvfp4 >"$work/train.txt" 2>&1 || { cat "$work/train.txt"; fail "training run"; }
  [[ "$(grep -c '"step"' "$work/run/metrics.jsonl")" -ge 3 ]] || fail "the run wrote no 3 steps to metrics.jsonl"
  # A subcommand written in Python (matplotlib) runs with this venv's interpreter and its installed package.
  rm -rf "$work/plots"
  "$work/venv/bin/nibble-train" plot "$work/run" --out "$work/plots" >"$work/plot.txt" 2>&1 || { cat "$work/plot.txt"; fail "nibble-train plot"; }
  compgen -G "$work/plots/*.png" >/dev/null || fail "nibble-train plot wrote no PNG"
}

# cmake.python-hints=false: CMake keeps the tree's cached Python (the project venv's python3, the same interpreter
# and torch) instead of this venv's, which would change nibble-train's compiled-in Python path, recompile it in
# the shared tree, and leave it naming this temporary venv after the test.
pip_install() {
  "$py" -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps -C build-dir="$build" \
    -C cmake.python-hints=false "$@"
}

echo "== pip install . into a clean venv"
pip_install "$src"
check_installed "$site/nibble"

echo "== pip install -e . (editable)"
"$py" -m pip uninstall -q -y nibble
if "$py" -c "import nibble" 2>/dev/null; then fail "nibble still imports after pip uninstall"; fi
pip_install -e "$src"
check_installed "$src/python/nibble"
echo "OK: clean-venv install, import, python -m nibble and nibble-train (installed and editable)"
