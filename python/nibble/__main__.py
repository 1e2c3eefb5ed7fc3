"""`python -m nibble`: what this build of nibble is and what it finds here -- paste it into bug reports."""
from __future__ import annotations

import os
import shutil
import sys

import torch

from . import _C, __version__


def report() -> str:
    b = _C.build_info()
    lines = [f"nibble {__version__} ({os.path.dirname(os.path.abspath(__file__))})",
             f"python {sys.version.split()[0]}, torch {torch.__version__} (compiled against {b['torch_compiled']}), "
             f"{b['compiler']}"]
    if b["cuda_kernels"]:
        lines.append(f"CUDA kernels: compiled for sm_{b['cuda_architectures'].replace(',', ', sm_')}")
    else:
        lines.append("CUDA kernels: not compiled (a CPU-only build)")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus:
        names = ", ".join(f"{torch.cuda.get_device_name(i)} (sm_{''.join(map(str, torch.cuda.get_device_capability(i)))})"
                          for i in range(gpus))
        lines.append(f"GPUs visible: {gpus}: {names}")
    else:
        lines.append("GPUs visible: none (CUDA_VISIBLE_DEVICES=" + os.environ.get("CUDA_VISIBLE_DEVICES", "unset") + ")")
    compiled, supported = b["cpu_vector_compiled"], b["cpu_vector_supported"]
    lines.append("CPU vector extensions: compiled for " + (", ".join(compiled) or "none (scalar)") +
                 "; this CPU has " + (", ".join(supported) or "none of avx2/avx512"))
    missing = [e for e in compiled if supported and e not in supported]
    if missing:
        lines.append("WARNING: this CPU lacks " + ", ".join(missing) + ", which the kernels were compiled for")
    lines.append("CPU GEMM kernel: " + b["cpu_gemm_kernel"] + " (NIBBLE_CPU_GEMM_KERNEL=fma32|dpbf16|hwy|scalar overrides)")
    lines.append(f"threads: torch {torch.get_num_threads()}, nibble {_C.get_num_threads()}")
    lines.append("mpirun: " + (shutil.which("mpirun") or "not found (multi-rank jobs need Open MPI)"))
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
