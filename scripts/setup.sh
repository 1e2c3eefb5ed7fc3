#!/usr/bin/env bash
# Installs what nibble needs and is missing: Debian packages and a project-local Python venv.
# Idempotent: a second run checks and returns in seconds.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"

apt_packages=(
  build-essential cmake ninja-build ccache pkg-config
  openmpi-bin libopenmpi-dev
  libcli11-dev libtomlplusplus-dev libspdlog-dev nlohmann-json3-dev zlib1g-dev
  libgtest-dev libgmock-dev libbenchmark-dev libhwy-dev
  clang libclang-rt-14-dev
  bible-kjv bible-kjv-text
)
# transformers, safetensors and tokenizers are for tests and Hugging Face interop only: importing nibble and
# training need none of them.
# scikit-build-core builds the package from this CMake project (`pip install --no-build-isolation .`).
# pytest-xdist runs the Python tests on both cores (tests/CMakeLists.txt).
pip_packages=(torch numpy pytest pytest-xdist ml_dtypes matplotlib torchao transformers safetensors tokenizers
              scikit-build-core)

missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[setup] installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating venv at $venv"
  python3 -m venv "$venv"
fi
stamp="$venv/.nibble-packages"
want="${pip_packages[*]}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing Python packages: $want"
  "$venv/bin/pip" install -q --disable-pip-version-check "${pip_packages[@]}"
  echo "$want" >"$stamp"
fi

# The default text corpus: the King James Bible from Debian's bible-kjv, as plain text (verse references
# stripped), written once to data/kjv.txt.
corpus="$root/data/kjv.txt"
if [ ! -s "$corpus" ]; then
  echo "[setup] writing the text corpus $corpus"
  mkdir -p "$root/data"
  bible -f "Gen1:1-Rev22:21" | sed -E 's/^[0-9]?[A-Za-z]+[0-9]+:[0-9]+ //' >"$corpus.tmp"
  mv "$corpus.tmp" "$corpus"
fi
