#!/usr/bin/env bash
# Installs nibble into the project venv (.venv) the way a user would, with pip (pyproject.toml, scikit-build-core
# driving this CMake project), from an already built tree so nothing is compiled twice:
#   .venv/bin/python3 -m pip install --no-build-isolation --no-deps -C build-dir=BUILD .
# pip re-runs CMake on BUILD (same settings as the default preset: nothing recompiles), builds the two targets a
# wheel ships (nibble._C and nibble-train), and installs the package, the extension and the `nibble-train`
# command into .venv. Skipped when what it would install is unchanged since the last install (a stamp of their
# hashes in the venv). Usage: scripts/install_package.sh [BUILD]   (default: build)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$(cd "${1:-$root/build}" && pwd)"
python="$root/.venv/bin/python3"  # python3, as the preset names it: the same Python3_EXECUTABLE, no recompile
stamp="$root/.venv/.nibble-installed"

shopt -s nullglob
installed_inputs() {  # what an install copies: the hash after pip's own (incremental) build of the tree
  local inputs=("$root/pyproject.toml" "$root"/python/nibble/*.py "$root"/python/_nibble_launcher/*.py
                "$build"/python_package/nibble/_C*.so "$build/nibble-train")
  echo "$build $(cat "${inputs[@]}" | sha256sum | cut -d' ' -f1)"
}
if [[ -f "$stamp" && "$(cat "$stamp")" == "$(installed_inputs)" ]] && "$python" -c "import _nibble_launcher" 2>/dev/null; then
  exit 0
fi
echo "[install] pip install --no-build-isolation -C build-dir=$build $root (into $root/.venv)"
export CCACHE_DIR="${CCACHE_DIR:-$root/.ccache}"
"$python" -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps \
  -C build-dir="$build" "$root"
installed_inputs >"$stamp"
