"""nibble.convert: swaps, in place, the torch.nn.Linear layers of any model for nibble.nn.Linear layers of a
recipe (torchao's convert_to_float8_training for nibble's recipes), and reports what it did to each one.

A swapped layer keeps the very Parameter objects of the original (weight, bias), so dtype, device,
requires_grad, tied weights, optimizers built before the swap and state_dict keys all stay as they were; only
the GEMMs change. A layer that nibble's Linear cannot run is left untouched and named in the report with the
reason: it is found now, by a trial forward and backward of its shape, not deep in a later training step.
"""
from __future__ import annotations

import fnmatch
from typing import Callable, Dict, Iterable, List, Optional, Tuple, Union

import torch

from . import _C
from .conversion_report import ConversionReport, LayerDecision
from .nn import Linear, Recipe

# The NVFP4 paper (and nibble-train's lm_head_recipe) keeps the LM head in BF16: its vocabulary-sized GEMM is
# the most sensitive to quantization and a small share of the FLOPs.
DEFAULT_SKIP: Tuple[str, ...] = ("lm_head",)
# core/linear.cpp takes float32 or bfloat16 weights and inputs, on the CPU or a CUDA device.
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16)
SUPPORTED_DEVICE_TYPES = ("cpu", "cuda")
# Tokens of the trial forward/backward: a multiple of every block and transform length a preset uses along
# the tokens (16 for NVFP4's RHT, 32 for Hadamard-32), so a failure is the layer's shape, not the trial's.
TRIAL_TOKENS = 32

FilterFn = Callable[[torch.nn.Module, str], bool]


def convert(module: torch.nn.Module, recipe: Union[str, Recipe], *, skip: Union[str, Iterable[str]] = DEFAULT_SKIP,
            filter_fn: Optional[FilterFn] = None, keep_first_last: bool = True) -> ConversionReport:
    """Replaces every ``torch.nn.Linear`` of ``module`` (in place) by a ``nibble.nn.Linear`` running ``recipe``
    (a preset name from ``nibble.recipes``, ``"exmy:<fmt>"``, or a ``nibble.Recipe``), except:

    - layers whose qualified name, or any dotted suffix of it, matches a ``skip`` pattern (fnmatch; the default
      keeps every ``lm_head``); ``skip=()`` skips nothing by name;
    - with ``keep_first_last`` (default), the model's first and last Linear in registration order;
    - layers for which ``filter_fn(module, name)`` returns False (torchao's argument order);
    - layers nibble's Linear cannot run: a dtype other than float32/bfloat16, a device other than cpu/cuda,
      a subclass of torch.nn.Linear or a layer with hooks (its behaviour would not survive the swap), or a shape
      the recipe refuses (found by a trial forward and backward of that shape).

    Each converted layer is named after its qualified name, which keys its stochastic rounding (the same in every
    process). Returns a ConversionReport; ``print(report)`` lists every Linear with what happened to it.
    """
    recipe = _checked_recipe(recipe)
    _check_module(module)
    patterns = _checked_patterns(skip)
    if filter_fn is not None and not callable(filter_fn):
        raise TypeError(f"nibble.convert: filter_fn must be callable as filter_fn(module, name) -> bool, got "
                        f"{type(filter_fn).__name__} {filter_fn!r}")
    if not isinstance(keep_first_last, bool):
        raise TypeError(f"nibble.convert: keep_first_last must be True or False, got {keep_first_last!r}")

    occurrences = [(name, m) for name, m in module.named_modules(remove_duplicate=False)
                   if isinstance(m, torch.nn.Linear)]
    distinct = list({id(m): m for _, m in occurrences}.values())  # dicts keep first-seen order
    # The model's edges: its first and last Linear in registration order (for a transformer, the first
    # block's first projection and the head).
    edges = {id(distinct[-1]): "last", id(distinct[0]): "first"} if keep_first_last and distinct else {}
    report = ConversionReport(recipe=recipe.name)
    trials = _ShapeTrials(recipe)
    swapped: Dict[int, Tuple[str, Optional[Linear]]] = {}  # id(original) -> (first name, replacement or None)
    matched_patterns = set()

    for name, linear in occurrences:
        if id(linear) in swapped:  # one module registered under several names: decided once, swapped everywhere
            first_name, replacement = swapped[id(linear)]
            reason = f"same module as {first_name}"
        else:
            reason = _reason_to_keep(name, linear, patterns, matched_patterns, edges, filter_fn, trials)
            replacement = None if reason else _nibble_linear(name, linear, recipe)
            swapped[id(linear)] = (name, replacement)
        if replacement is not None:
            _set_submodule(module, name, replacement)
        report.layers.append(_decision(name, linear, replacement is not None, reason))

    if skip is not DEFAULT_SKIP:  # a user's pattern that matches nothing is most likely a typo
        report.notes += [f"skip pattern {p!r} matched no Linear" for p in patterns if p not in matched_patterns]
    if report.converted:
        report.notes += trials.token_count_notes()
    return report


def _checked_recipe(recipe) -> Recipe:
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, str):
        try:
            return Recipe(recipe)
        except ValueError as e:  # the library's message names the valid presets
            raise ValueError(f"nibble.convert: {e}") from None
    raise TypeError(f"nibble.convert: recipe must be a preset name ({', '.join(_C.recipe_presets())}, "
                    f"exmy:<format>) or a nibble.Recipe, got {type(recipe).__name__} {recipe!r}")


def _check_module(module) -> None:
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"nibble.convert: module must be a torch.nn.Module, got {type(module).__name__}")
    if isinstance(module, torch.nn.Linear):
        raise ValueError("nibble.convert: the module is itself a torch.nn.Linear, which cannot be replaced in "
                         "place; convert the model that holds it, or build a nibble.nn.Linear directly")


def _checked_patterns(skip) -> List[str]:
    patterns = [skip] if isinstance(skip, str) else skip
    try:
        patterns = list(patterns)
    except TypeError:
        raise TypeError(f"nibble.convert: skip must be a name pattern or an iterable of them, got "
                        f"{type(skip).__name__} {skip!r}") from None
    for p in patterns:
        if not isinstance(p, str):
            raise TypeError(f"nibble.convert: skip patterns must be strings, got {type(p).__name__} {p!r}")
    return patterns


def _matching_pattern(name: str, patterns: List[str]) -> Optional[str]:
    """The first pattern matching ``name`` or one of its dotted suffixes ("lm_head" matches "model.lm_head")."""
    parts = name.split(".")
    suffixes = [".".join(parts[i:]) for i in range(len(parts))]
    for p in patterns:
        if any(fnmatch.fnmatchcase(s, p) for s in suffixes):
            return p
    return None


def _reason_to_keep(name, linear, patterns, matched_patterns, edges, filter_fn, trials) -> str:
    """Why ``linear`` stays as it is, or "" when it converts. The first reason that applies is given."""
    pattern = _matching_pattern(name, patterns)
    if pattern is not None:
        matched_patterns.add(pattern)
        return f"matches skip pattern {pattern!r}"
    if id(linear) in edges:
        return f"{edges[id(linear)]} Linear of the model (keep_first_last=True)"
    if filter_fn is not None and not filter_fn(linear, name):
        return "filter_fn returned False"
    if type(linear) is not torch.nn.Linear:
        return (f"{type(linear).__module__}.{type(linear).__qualname__} is a subclass of torch.nn.Linear: its own "
                "forward (or a caller reading its weight directly) would not run through nibble's Linear")
    if linear._forward_hooks or linear._forward_pre_hooks or linear._backward_hooks or \
            getattr(linear, "_backward_pre_hooks", None):
        return "has module hooks registered, which a swap would drop"
    weight, bias = linear.weight, linear.bias
    for what, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype not in SUPPORTED_DTYPES:
            return f"{what} dtype {str(t.dtype).replace('torch.', '')} is not supported by nibble's Linear " \
                   f"(float32 or bfloat16)"
    if weight.device.type not in SUPPORTED_DEVICE_TYPES:
        return f"device {weight.device} is not supported by nibble's Linear (cpu or cuda)"
    failure = trials.failure(weight, bias)
    if failure:
        return (f"a trial forward and backward of a {linear.in_features} -> {linear.out_features} layer under "
                f"{trials.recipe.name} fails: {failure}")
    return ""


def _nibble_linear(name: str, linear: torch.nn.Linear, recipe: Recipe) -> Linear:
    # Built on the meta device so no weight is allocated and initialised only to be replaced by the original's.
    with torch.device("meta"):
        replacement = Linear(linear.in_features, linear.out_features, bias=linear.bias is not None, recipe=recipe,
                             name=name, dtype=linear.weight.dtype)
    replacement.weight = linear.weight
    replacement.bias = linear.bias
    replacement.train(linear.training)
    return replacement


def _set_submodule(root: torch.nn.Module, name: str, replacement: torch.nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, replacement)


def _decision(name: str, linear: torch.nn.Linear, converted: bool, reason: str) -> LayerDecision:
    return LayerDecision(name=name, in_features=linear.in_features, out_features=linear.out_features,
                         bias=linear.bias is not None, dtype=linear.weight.dtype, device=linear.weight.device,
                         converted=converted, reason=reason)


class _ShapeTrials:
    """Runs nibble's Linear forward and backward once per distinct (shape, dtypes, device) on the layer's own
    weight (detached: the model's tensors, gradients and layer states are untouched) with random inputs from a
    private generator (the caller's RNG streams are untouched), and remembers the library's message on failure."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self._results: Dict[tuple, str] = {}
        self._last_ok: Optional[Tuple[torch.Tensor, Optional[torch.Tensor]]] = None

    def failure(self, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> str:
        key = (tuple(weight.shape), weight.dtype, None if bias is None else bias.dtype, weight.device)
        if key not in self._results:
            self._results[key] = self._run(weight, bias, TRIAL_TOKENS)
            if not self._results[key]:
                self._last_ok = (weight, bias)
        return self._results[key]

    def token_count_notes(self) -> List[str]:
        """A recipe whose backward blocks along the tokens (NVFP4's 16-point RHT of the wgrad operands) refuses
        some token counts at training time; a 1-token trial brings out its rule in the library's own words."""
        if self._last_ok is None:
            return []
        failure = self._run(*self._last_ok, tokens=1)
        if not failure:
            return []
        return [f"{self.recipe.name}: while training, the number of tokens a converted layer sees (the product of "
                f"its input's leading dimensions) must suit the recipe's backward; a 1-token trial fails: {failure}"]

    def _run(self, weight: torch.Tensor, bias: Optional[torch.Tensor], tokens: int) -> str:
        # Gradients on whatever mode the caller converts in (no_grad, inference_mode): the trial needs a backward.
        with torch.inference_mode(False), torch.enable_grad():
            generator = torch.Generator().manual_seed(0)
            out_features, in_features = weight.shape
            x = torch.randn(tokens, in_features, generator=generator).to(weight.device, weight.dtype)
            dy = torch.randn(tokens, out_features, generator=generator).to(weight.device, weight.dtype)
            w, b = (None if t is None else _trainable_view(t) for t in (weight, bias))
            state = _C.LinearState(self.recipe, "trial", 0)
            try:
                _C.linear(x.requires_grad_(), w, b, state).backward(dy)
            except Exception as e:  # any failure of the library on this shape keeps the layer, with its message
                return str(e).strip()
        return ""


def _trainable_view(t: torch.Tensor) -> torch.Tensor:
    """``t``'s values as a leaf that takes gradients: a detached view, or a copy of an inference tensor (a model
    built under torch.inference_mode), which cannot take part in autograd."""
    return (t.clone() if t.is_inference() else t.detach()).requires_grad_()
