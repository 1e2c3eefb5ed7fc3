"""Run a Python snippet on N MPI ranks (mpirun, oversubscribed) from a pytest test, and check every rank finished.

The snippet prints ``OK rank <r>`` on each rank when it got to the end; `check` asserts the job exited 0 and
every rank printed that line (so a rank that silently did nothing cannot pass)."""
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import nibble

MPIRUN = shutil.which("mpirun")
needs_mpirun = pytest.mark.skipif(MPIRUN is None, reason="mpirun (Open MPI) not found")


def run_ranks(script: str, np: int = 2, timeout: float = 120.0) -> subprocess.CompletedProcess:
    package = os.path.dirname(os.path.dirname(os.path.abspath(nibble.__file__)))
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_pml="ob1",
               OMPI_MCA_mpi_yield_when_idle="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([package, os.environ.get("PYTHONPATH", "")]))
    cmd = [MPIRUN, "-np", str(np), "--oversubscribe", "--bind-to", "none", sys.executable, "-c",
           textwrap.dedent(script)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def check(result: subprocess.CompletedProcess, np: int = 2):
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    for r in range(np):
        assert f"OK rank {r}" in result.stdout, result.stdout + result.stderr
