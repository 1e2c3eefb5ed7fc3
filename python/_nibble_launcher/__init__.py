"""The `nibble-train` command of a pip-installed nibble: runs the compiled nibble-train shipped in the package
(site-packages/nibble/_bin/nibble-train) in place of this process.

A package of its own, not a module of `nibble`, so that starting it does not import nibble (and with it torch
and the extension): under `mpirun -np N nibble-train ...` every rank pays this start-up. It finds the package and
torch without importing them, lets the binary load libtorch from this environment's torch, and names this
interpreter in NIBBLE_PYTHON_EXECUTABLE for the subcommands written in Python (plot, export, import).
"""
from __future__ import annotations

import importlib.util
import os
import sys


def _package_dirs(name: str) -> list[str]:
    spec = importlib.util.find_spec(name)
    return list(spec.submodule_search_locations or []) if spec else []


def find_binary() -> str:
    """The installed nibble-train binary; an editable install may spread the package over several folders."""
    dirs = _package_dirs("nibble")
    for d in dirs:
        candidate = os.path.join(d, "_bin", "nibble-train")
        if os.access(candidate, os.X_OK):
            return candidate
    raise SystemExit("nibble-train: the compiled nibble-train is not in the installed package (looked in "
                     + (", ".join(os.path.join(d, "_bin") for d in dirs) or "no package `nibble` on sys.path")
                     + "); reinstall with `pip install --no-build-isolation .` from nibble's source tree")


def main() -> None:
    binary = find_binary()
    env = dict(os.environ)
    torch_dirs = _package_dirs("torch")
    if torch_dirs:  # the torch this environment imports, whichever site-packages holds it
        lib = os.path.join(torch_dirs[0], "lib")
        env["LD_LIBRARY_PATH"] = lib + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    env["NIBBLE_PYTHON_EXECUTABLE"] = sys.executable
    os.execve(binary, ["nibble-train", *sys.argv[1:]], env)


if __name__ == "__main__":
    main()
