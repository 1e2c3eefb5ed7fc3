"""nibble: distributed low-precision (FP8, NVFP4, MXFP4, any ExMy) transformer training.

This package is the Python face of the C++ library; the kernels live in the extension module ``nibble._C``.
"""
import torch  # before the extension: it loads the libtorch that _C was linked against

try:
    from . import _C
except ImportError as e:  # e.g. undefined symbols: built against another torch than the one installed now
    raise ImportError(f"nibble's compiled extension nibble._C could not be loaded ({e}). It must be built against "
                      f"the torch that imports it (torch {torch.__version__} here): rebuild with "
                      f"`pip install --no-build-isolation .` (or scripts/build.sh) from nibble's source tree") from e

__version__ = _C.build_info()["version"]
from .formats import decode, encode, format_info, get_num_threads, set_num_threads
from .quantize import SCHEMES, DelayedScaling, QuantizedTensor, gemm, gemm_path, gemm_paths, quantize, rht, rht_matrix
from . import nn
from .nn import Recipe, autocast
from . import optim
from . import parallel  # MPI is initialised by nibble.parallel.init(), never at import
from . import models  # nibble-train's GPT, config and batches (nibble.models.GPT)
from .conversion_report import ConversionReport
# (the function nibble.convert shadows its module's name; `from nibble.convert import DEFAULT_SKIP` still works)
from .convert import convert

from ._C import read_safetensors, write_safetensors  # nibble's own reader/writer (core/checkpoint/safetensors.h)

recipes = nn.recipes()

__all__ = ["encode", "decode", "format_info", "set_num_threads", "get_num_threads", "quantize", "QuantizedTensor",
           "DelayedScaling", "SCHEMES", "rht", "rht_matrix", "gemm", "gemm_path", "gemm_paths", "nn", "Recipe", "autocast", "recipes",
           "parallel", "models", "convert", "ConversionReport", "read_safetensors", "write_safetensors", "__version__"]
