#!/usr/bin/env bash
# Set-up (idempotent), an incremental build of everything with the default preset, and the package installed
# into .venv from that build (pip; scripts/install_package.sh): `import nibble` and `nibble-train` work there.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
export CCACHE_DIR="${CCACHE_DIR:-$root/.ccache}"
cmake --preset default >/dev/null
cmake --build --preset default -j "$(nproc)"
bash scripts/install_package.sh build
