"""nibble.nn: low-precision Linear, RMSNorm and SwiGLU modules, and the recipe autocast.

A recipe (``nibble.Recipe("nvfp4")``, a preset name, or ``nibble.Recipe.custom(...)``) says how each GEMM
operand of a Linear layer is quantized and whether non-linear ops compress what they save for backward.
Which recipe a module uses: the ``recipe=`` it was built with, else the innermost active
``nibble.autocast(recipe)`` at the time it runs, else the autocast active when it was created, else "bf16".
"""
from __future__ import annotations

import contextlib
import itertools
import json
import math
import threading
from typing import Iterator, Optional, Union

import torch

from . import _C

Recipe = _C.Recipe
RecipeLike = Union[str, "Recipe", None]

# The autocast stack is per thread, as torch.autocast's is: a recipe scope is a property of the code running
# in a thread (like a `with` block), not of an object, and a caller holds it through the context manager.
_state = threading.local()
# Default layer names ("linear0", "linear1", ...) number the layers in creation order. A process-wide counter
# is the right shape: names must be unique within the process (they key stochastic rounding and messages), and
# every rank of an SPMD job builds its modules in the same order, so every rank names -- and so seeds -- a
# layer alike. Pass name= (or seed=) where creation order may differ between processes.
_layer_ids = itertools.count()


def recipes() -> list:
    """The preset recipe names (plus "exmy:<fmt>" for any research element format)."""
    return list(_C.recipe_presets())


def as_recipe(recipe: RecipeLike) -> Optional[Recipe]:
    if recipe is None or isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, str):
        return Recipe(recipe)
    raise TypeError(f"recipe must be a preset name or nibble.Recipe, got {type(recipe).__name__}")


def _autocast_stack() -> list:
    if not hasattr(_state, "stack"):
        _state.stack = []
    return _state.stack


def current_recipe() -> Optional[Recipe]:
    stack = _autocast_stack()
    return stack[-1] if stack else None


@contextlib.contextmanager
def autocast(recipe: RecipeLike) -> Iterator[Recipe]:
    """Modules created or run inside use ``recipe`` (unless built with an explicit one)."""
    r = as_recipe(recipe)
    _autocast_stack().append(r)
    try:
        yield r
    finally:
        _autocast_stack().pop()


class _RecipeModule(torch.nn.Module):
    def __init__(self, recipe: RecipeLike):
        super().__init__()
        self._explicit_recipe = as_recipe(recipe)
        self._creation_recipe = current_recipe()

    def active_recipe(self) -> Recipe:
        return self._explicit_recipe or current_recipe() or self._creation_recipe or Recipe("bf16")


def layer_seed(name: str, run_seed: int = 0) -> int:
    """The stochastic-rounding key of a layer named ``name``: the C++ library's FNV-1a of the name (what
    nibble-train's GPT uses), the same in every process and on every rank -- unlike Python's salted hash()."""
    return _C.layer_seed(name, run_seed)


class _LinearStates(_RecipeModule):
    """What every nibble Linear shares: its name, its SR seed and one C++ LinearState per recipe it ran with."""

    def __init__(self, recipe: RecipeLike, name: Optional[str], seed: Optional[int], default_prefix: str):
        super().__init__(recipe)
        self.layer_name = name or f"{default_prefix}{next(_layer_ids)}"
        self.seed = seed if seed is not None else layer_seed(self.layer_name)
        self._states = {}

    def state_for(self, recipe: Recipe) -> "_C.LinearState":
        """The layer's C++ state for a recipe (weight cache, delayed-scaling histories, SR counter)."""
        key = (recipe.name, recipe.reproducible_sums)
        if key not in self._states:
            self._states[key] = _C.LinearState(recipe, self.layer_name, self.seed)
        state = self._states[key]
        state.collect_stats = getattr(self, "_collect_stats", False)  # a state first made inside quantization_stats
        return state

    def end_step(self) -> None:
        """Fold this step's amaxes into the delayed-scaling scales (fp8_delayed); call once per step."""
        for state in self._states.values():
            state.end_step()


class Linear(_LinearStates):
    """y = x Wᵀ + b with the recipe's low-precision fprop, dgrad and wgrad GEMMs (FP32 accumulation)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, recipe: RecipeLike = None,
                 name: Optional[str] = None, seed: Optional[int] = None, dtype: torch.dtype = torch.float32):
        super().__init__(recipe, name, seed, "linear")
        if in_features <= 0 or out_features <= 0:
            raise ValueError(f"Linear: in_features and out_features must be positive, got {in_features}, "
                             f"{out_features}")
        self.in_features, self.out_features = in_features, out_features
        self.weight = torch.nn.Parameter(torch.empty(out_features, in_features, dtype=dtype))
        self.bias = torch.nn.Parameter(torch.zeros(out_features, dtype=dtype)) if bias else None
        torch.nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _C.linear(x, self.weight, self.bias, self.state_for(self.active_recipe()))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"recipe={self.active_recipe().name}")


class RMSNorm(_RecipeModule):
    """RMSNorm; with a quantizing recipe its saved input is compressed to FP8 1x16 groups (COAT)."""

    def __init__(self, dim: int, eps: float = 1e-6, recipe: RecipeLike = None, name: str = "rms_norm"):
        super().__init__(recipe)
        self.weight = torch.nn.Parameter(torch.ones(dim))
        self.eps, self.layer_name = eps, name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _C.rms_norm(x, self.weight, self.eps, self.active_recipe().compress_activations, self.layer_name)


class SwiGLU(_RecipeModule):
    """silu(gate) * up; with a quantizing recipe gate and up are saved as FP8 1x16 groups (COAT)."""

    def __init__(self, recipe: RecipeLike = None, name: str = "swiglu"):
        super().__init__(recipe)
        self.layer_name = name

    def forward(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return _C.swiglu(gate, up, self.active_recipe().compress_activations, self.layer_name)


def end_step(model: torch.nn.Module) -> None:
    """Call after each optimizer step: updates every nibble Linear's delayed scales."""
    for module in model.modules():
        if isinstance(module, _LinearStates):
            module.end_step()


class SavedBytes:
    bytes: int = 0


@contextlib.contextmanager
def measure_saved_bytes() -> Iterator[SavedBytes]:
    """Counts the bytes nibble's autograd functions save for backward inside the block."""
    result = SavedBytes()
    before = _C.saved_bytes()
    try:
        yield result
    finally:
        result.bytes = _C.saved_bytes() - before


# The quantized copies of a Linear's GEMM operands, in record order (as nibble-train's stats.jsonl).
STAT_ROLES = ("x_row", "w_row", "x_col", "w_col", "dy_row", "dy_col")


class QuantizationStats:
    """What a ``quantization_stats`` block measured: ``layers[name][role]`` is a dict of figures (``amax``,
    ``scale_log2`` [min, max], ``flushed``, ``clamped``, ``snr_db`` and, for stochastically rounded copies,
    ``bias``) -- the same figures, from the same C++ code, as nibble-train's stats.jsonl (docs/STATS.md)."""

    def __init__(self):
        self.layers: dict = {}

    def __repr__(self) -> str:
        return f"QuantizationStats({len(self.layers)} layers)"


@contextlib.contextmanager
def quantization_stats(module: torch.nn.Module, group=None) -> Iterator[QuantizationStats]:
    """Measures every quantized GEMM operand copy of every nibble Linear in ``module`` (forwards and backwards
    run inside the block) against the high-precision tensor it was made from; the figures fill the yielded
    object when the block ends. The Linears are nibble.nn's and nibble.tensor_parallel's modules and the C++
    Linears of a nibble.models.GPT. ``group``: a nibble.parallel group whose ranks hold the module's shards or
    replicas (tp, dp): the sums are reduced over it first, so every rank gets the figures of the whole tensor.
    All of the group's ranks must then run the block, with the same layers."""
    linears = [m for m in module.modules() if isinstance(m, _LinearStates)]
    # (name, the layer's C++ states) in a fixed order; Python Linears may make a state inside the block.
    def layers() -> list:
        out = [(m.layer_name, list(m._states.values())) for m in linears]
        for m in module.modules():
            if not isinstance(m, _LinearStates) and callable(getattr(m, "linear_states", None)):
                out += [(s.name, [s]) for s in m.linear_states()]
        return out

    result = QuantizationStats()
    for m in linears:
        m._collect_stats = True
    for _, states in layers():
        for state in states:
            state.clear_stats()
            state.collect_stats = True
    try:
        yield result
    finally:
        for m in linears:
            m._collect_stats = False
        for _, states in layers():
            for state in states:
                state.collect_stats = False
    # Per layer and role, the sums over the layer's states (one per recipe it ran with), zeros where none.
    # (the C++ QuantizationErrorSums layout: maxima are amax, log2 scale max, -log2 scale min, and two flags)
    entries = layers()
    sums = torch.zeros(len(entries), len(STAT_ROLES), _C.quantization_sum_fields, dtype=torch.float64)
    maxes = torch.full((len(entries), len(STAT_ROLES), _C.quantization_max_fields), float("-inf"),
                       dtype=torch.float64)
    maxes[..., 0] = 0.0
    maxes[..., 3:] = 0.0
    for i, (_, states) in enumerate(entries):
        for state in states:
            for role, (s, x) in state.stats_sums().items():
                j = STAT_ROLES.index(role)
                sums[i, j] += torch.tensor(s, dtype=torch.float64)
                maxes[i, j] = torch.maximum(maxes[i, j], torch.tensor(x, dtype=torch.float64))
            state.clear_stats()
    if group is not None:
        group.all_reduce(sums, "sum")
        group.all_reduce(maxes, "max")
    for i, (name, _) in enumerate(entries):
        figures = {}
        for j, role in enumerate(STAT_ROLES):
            if sums[i, j, 0] > 0:  # elements measured
                figures[role] = json.loads(_C.quantization_figures(sums[i, j].tolist(), maxes[i, j].tolist()))
        if figures:
            result.layers[name] = figures
