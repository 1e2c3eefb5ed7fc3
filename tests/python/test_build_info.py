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
    assert f"CPU GEMM kernel: {info['cpu_gemm_kernel']} " in r.stdout
    assert info["cpu_gemm_kernel"] in ("fma32", "dpbf16", "hwy", "scalar"), info


def test_the_cpu_gemm_kernel_follows_its_environment_variable():
    env = dict(os.environ, NIBBLE_CPU_GEMM_KERNEL="scalar")
    r = subprocess.run([sys.executable, "-m", "nibble"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "CPU GEMM kernel: scalar " in r.stdout, r.stdout
    env["NIBBLE_CPU_GEMM_KERNEL"] = "avx9"
    r = subprocess.run([sys.executable, "-m", "nibble"], capture_output=True, text=True, timeout=120, env=env)
    assert "CPU GEMM kernel: none: NIBBLE_CPU_GEMM_KERNEL=avx9 is not a CPU GEMM kernel; use fma32, dpbf16, hwy or scalar" \
        in r.stdout, r.stdout
