#!/usr/bin/env bash
# Set-up (idempotent) and an incremental build of everything with the default preset.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
export CCACHE_DIR="${CCACHE_DIR:-$root/.ccache}"
cmake --preset default >/dev/null
cmake --build --preset default -j "$(nproc)"
