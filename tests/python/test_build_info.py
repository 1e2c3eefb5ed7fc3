"""nibble.__version__ and `python -m nibble` (issue 16 item 1's bug-report line): the version is the CMake
project's, and the report names the build's CUDA kernels, the GPUs torch sees and the CPU's vector extensions."""
import os
import re
import subprocess
import sys

import torch

import nibble

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def project_version():
    with open(os.path.join(ROOT, "CMakeLists.txt")) as f:
        return re.search(r"project\(nibble VERSION ([0-9.]+)", f.read()).group(1)


def test_version_is_the_projects():
    assert nibble.__version__ == project_version()


def test_python_dash_m_nibble_reports_the_build():
    r = subprocess.run([sys.executable, "-m", "nibble"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"nibble {project_version()} (")
    assert f"torch {torch.__version__}" in r.stdout
    info = nibble._C.build_info()
    cuda = next(line for line in lines if line.startswith("CUDA kernels: "))
    assert ("compiled for sm_" in cuda) == info["cuda_kernels"], cuda
    gpus = next(line for line in lines if line.startswith("GPUs visible: "))
    assert gpus.startswith("GPUs visible: none") == (torch.cuda.device_count() == 0), gpus
    assert any(line.startswith("CPU vector extensions: compiled for ") for line in lines), r.stdout
    # On the machine that built it, everything compiled for is present (no warning).
    assert "WARNING" not in r.stdout, r.stdout
