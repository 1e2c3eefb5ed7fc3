"""Optimizers with compressed states: ``nibble.optim.AdamW`` and ``nibble.optim.SGD``.

Both are ``torch.optim.Optimizer`` subclasses over any float32 / bfloat16 CPU parameters, thin wrappers of
the C++ optimizer the trainer and ZeRO-1 use (optim/torch/optimizer.h): it validates the hyperparameters,
owns the states and updates every parameter group in one fused pass (dequantize the moments, FP32 update,
requantize, write the parameter), multi-threaded. The moments are stored by ``state``:

- ``"fp32"``: float32 (the names and layout of ``torch.optim.AdamW``: ``exp_avg``, ``exp_avg_sq``)
- ``"bf16"``: bfloat16, written with stochastic rounding
- ``"fp8"``: E4M3 codes with COAT's dynamic range expansion; per 128 elements a scale, k and centre
- ``"fp8_plain"``: E4M3 codes with a per-128 absmax scale (the ablation without expansion)
- ``"int8"``: bitsandbytes-style dynamic-map codes with a per-256 absmax; tensors under 4096 elements: fp32

``master="fp32"`` keeps an FP32 master copy of bfloat16 parameters (the parameter gets an RNE copy);
``master="none"`` updates bfloat16 parameters in FP32 and writes them back with stochastic rounding
(``stochastic_rounding=False`` for the RNE ablation). Float32 parameters are their own master.

Before every step all gradients are read once: a NaN/Inf skips the whole step (nothing changes) and names
the parameter (a RuntimeWarning, or ``NonFiniteGradientError`` with ``on_nonfinite="raise"``);
``max_grad_norm`` scales gradients by ``clip_grad_norm_``'s coefficient inside the fused pass (``.grad``
itself is left untouched). Formulas and storage: docs/OPTIMIZERS.md.
"""
from __future__ import annotations

import math
import warnings
from typing import Optional

import torch

from . import _C

STATE_CODECS = ("fp32", "bf16", "fp8", "fp8_plain", "int8")
MASTERS = ("fp32", "none")


class NonFiniteGradientError(RuntimeError):
    """A gradient held NaN or Inf; the step was skipped. ``param_name`` names the parameter."""

    def __init__(self, message: str, param_name: str):
        super().__init__(message)
        self.param_name = param_name


class _FusedOptimizer(torch.optim.Optimizer):
    """torch.optim.Optimizer over the C++ optimizer front-end (optim/torch/optimizer.h, ``_C.TorchOptimizer``):
    torch keeps the param_groups (so schedulers, hooks and ``state_dict()`` work as usual); the C++ optimizer
    validates the hyperparameters, owns the state tensors (``self.state[p]`` holds the very tensors it updates),
    reads the gradients once (norm, NaN/Inf), clips and steps every group in one fused pass."""

    _KIND = ""

    def __init__(self, params, defaults: dict, max_grad_norm: Optional[float], seed: int, on_nonfinite: str):
        if on_nonfinite not in ("skip", "raise"):
            raise ValueError(f"nibble.optim: unknown on_nonfinite {on_nonfinite!r}; valid: skip, raise")
        # Optimizer-wide settings, repeated in every group's config (the C++ side checks they agree).
        self._shared = dict(kind=self._KIND.lower(), seed=seed, max_grad_norm=max_grad_norm)
        self._group_keys = tuple(defaults)  # what a group passes (torch adds keys of its own to defaults)
        self._impl = None  # the C++ optimizer, created with the first parameter group
        self._params: list = []  # every parameter, in the C++ optimizer's order
        self._param_names: list = []  # their names there (messages, state keys)
        super().__init__(params, defaults)
        self.max_grad_norm = max_grad_norm
        self.seed = int(seed)
        self.on_nonfinite = on_nonfinite
        #: What the last step() did: skipped (bool), bad_param (name or None), grad_norm, clip.
        self.last_step: dict = {"skipped": False, "bad_param": None, "grad_norm": None, "clip": 1.0}

    def _config(self, group: dict) -> dict:
        config = {key: group[key] for key in self._group_keys}
        config.update(self._shared)
        return config

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        index = len(self.param_groups) - 1
        given = group.get("param_names")
        named = [(given[i] if given else f"param_groups[{index}]['params'][{i}] (shape {tuple(p.shape)})", p)
                 for i, p in enumerate(group["params"])]
        try:
            if self._impl is None:
                self._impl = _C.TorchOptimizer(named, self._config(group))
            else:
                self._impl.add_param_group(named, self._config(group))
        except Exception:
            self.param_groups.pop()  # torch took the group; the C++ optimizer refused it: undo
            raise
        self._params.extend(group["params"])
        self._param_names.extend(name for name, _ in named)

    def _push_groups(self) -> None:
        """torch's param_groups are the source of truth between steps (users and LR schedulers edit them)."""
        for index, group in enumerate(self.param_groups):
            self._impl.set_group_config(index, self._config(group))

    def _expose_state(self) -> None:
        """self.state[p] = the C++ optimizer's live state tensors of p (once created, they stay the same)."""
        for index, p in enumerate(self._params):
            if not self.state.get(p):
                live = self._impl.param_state(index)
                if live:
                    self.state[p] = live

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._push_groups()
        report = self._impl.step_report()
        if not report["applied"]:
            name = report["nonfinite_param"]
            self.last_step = {"skipped": True, "bad_param": name, "grad_norm": math.inf, "clip": 0.0}
            message = f"nibble.optim.{self._KIND}: {report['message']}"
            if self.on_nonfinite == "raise":
                raise NonFiniteGradientError(message, name)
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            return loss
        if report["stepped"]:
            self._expose_state()
            self.last_step = {"skipped": False, "bad_param": None, "grad_norm": report["grad_norm"],
                              "clip": report["grad_scale"]}
        return loss

    # ---- state -----------------------------------------------------------------------------------------
    def load_state_dict(self, state_dict: dict) -> None:
        """Loads a state_dict() bit for bit. torch's loader casts floating state to the parameter dtype
        (which would round FP32 scales and moments of bfloat16 parameters); here torch restores the groups'
        hyperparameters and the C++ optimizer checks every tensor against its codec's layout and copies it as
        saved."""
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        if len(saved_ids) != len(self._params):
            raise ValueError(f"nibble.optim: the state_dict has {len(saved_ids)} parameters, the optimizer "
                             f"{len(self._params)}")
        super().load_state_dict({"state": {}, "param_groups": state_dict["param_groups"]})
        saved_state = state_dict["state"]
        flat = {f"{name}.{key}": t for sid, name in zip(saved_ids, self._param_names)
                for key, t in saved_state.get(sid, {}).items()}
        self._impl.load_state_dict(flat, [self._config(g) for g in self.param_groups])
        self.state.clear()
        self._expose_state()

    def state_bytes(self, include_master: bool = False) -> int:
        """Bytes of optimizer state for all parameters: moment codes or values plus their side data (scales,
        k, centres) per the codec's layout (allocated or not yet); with ``include_master``, FP32 masters."""
        return self._impl.state_bytes(include_master)

    def bytes_per_param(self, include_master: bool = False) -> float:
        n = sum(p.numel() for p in self._params)
        return self.state_bytes(include_master) / max(n, 1)


class AdamW(_FusedOptimizer):
    """AdamW (decoupled weight decay, bias correction) with compressed states; see the module docstring."""

    _KIND = "AdamW"

    def __init__(self, params, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, state: str = "fp32", master: str = "fp32",
                 max_grad_norm: Optional[float] = None, seed: int = 0, stochastic_rounding: bool = True,
                 dre_clamp_k: bool = False, on_nonfinite: str = "skip"):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, state=state, master=master,
                        stochastic_rounding=stochastic_rounding, dre_clamp_k=dre_clamp_k)
        super().__init__(params, defaults, max_grad_norm, seed, on_nonfinite)


class SGD(_FusedOptimizer):
    """SGD with momentum (torch.optim.SGD's rule: coupled weight decay, dampening, Nesterov) whose momentum
    buffer uses a state codec; see the module docstring."""

    _KIND = "SGD"

    def __init__(self, params, lr: float = 1e-2, momentum: float = 0.9, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, state: str = "fp32", master: str = "fp32",
                 max_grad_norm: Optional[float] = None, seed: int = 0, stochastic_rounding: bool = True,
                 dre_clamp_k: bool = False, on_nonfinite: str = "skip"):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                        state=state, master=master, stochastic_rounding=stochastic_rounding,
                        dre_clamp_k=dre_clamp_k)
        super().__init__(params, defaults, max_grad_norm, seed, on_nonfinite)


# ---- LR schedules ---------------------------------------------------------------------------------------
SCHEDULES = ("constant", "cosine", "linear")


def lr_factor(step: int, kind: str = "cosine", warmup_steps: int = 0, total_steps: int = 0,
              min_lr_ratio: float = 0.0) -> float:
    """The schedule's LR multiplier for the 0-based update index ``step``: linear warmup ((step+1)/warmup),
    then cosine or linear decay to ``min_lr_ratio`` at ``total_steps`` (warmup included), or constant."""
    return _C.optim_lr_factor(kind, int(step), int(warmup_steps), int(total_steps), float(min_lr_ratio))


def lr_schedule(optimizer: torch.optim.Optimizer, kind: str = "cosine", warmup_steps: int = 0,
                total_steps: int = 0, min_lr_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """A torch LambdaLR driving any optimizer's groups with :func:`lr_factor` (call ``.step()`` after each
    optimizer step, as with every torch scheduler)."""
    lr_factor(0, kind, warmup_steps, total_steps, min_lr_ratio)  # validates now, not at the first step
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, kind, warmup_steps, total_steps, min_lr_ratio))


# ---- the codecs on their own ----------------------------------------------------------------------------
def encode_state(x: torch.Tensor, codec: str, signed: bool = True, seed: int = 0) -> dict:
    """Encodes a float32 tensor as one optimizer moment: {"values", and per codec "scale", "k", "centre"}.
    ``signed`` picks int8's signed (first moment) or unsigned (second moment) map."""
    return _C.optim_encode_state(x.detach().float().contiguous().reshape(-1), codec, signed, seed)


def decode_state(encoded: dict, codec: str, numel: int, signed: bool = True) -> torch.Tensor:
    """Decodes :func:`encode_state`'s output to a flat float32 tensor."""
    return _C.optim_decode_state(encoded, codec, int(numel), signed)


def dynamic_map(signed: bool = True) -> torch.Tensor:
    """The 256-entry int8 dynamic code (sorted), signed (first moment) or unsigned (second moment)."""
    return _C.optim_dynamic_map(signed)


__all__ = ["AdamW", "SGD", "NonFiniteGradientError", "STATE_CODECS", "lr_factor", "lr_schedule", "encode_state",
           "decode_state", "dynamic_map", "SCHEDULES"]

