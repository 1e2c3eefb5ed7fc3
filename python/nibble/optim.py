"""Optimizers with compressed states: ``nibble.optim.AdamW`` and ``nibble.optim.SGD``.

Both are ``torch.optim.Optimizer`` subclasses over any float32 / bfloat16 CPU parameters. Each parameter
group is updated by one fused C++ pass (dequantize the moments, FP32 update, requantize, write the
parameter), multi-threaded. The moments are stored by ``state``:

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
_SIDE = ("scale", "k", "centre")


class NonFiniteGradientError(RuntimeError):
    """A gradient held NaN or Inf; the step was skipped. ``param_name`` names the parameter."""

    def __init__(self, message: str, param_name: str):
        super().__init__(message)
        self.param_name = param_name


def _check_choice(what: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"nibble.optim: unknown {what} {value!r}; valid: {', '.join(valid)}")


class _FusedOptimizer(torch.optim.Optimizer):
    """What AdamW and SGD share: state allocation, the gradient check, state_dict, state_bytes."""

    _KIND = ""

    def __init__(self, params, defaults: dict, max_grad_norm: Optional[float], seed: int, on_nonfinite: str):
        _check_choice("state codec", defaults["state"], STATE_CODECS)
        _check_choice("master", defaults["master"], MASTERS)
        _check_choice("on_nonfinite", on_nonfinite, ("skip", "raise"))
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"nibble.optim: max_grad_norm must be > 0 or None, got {max_grad_norm}")
        if not 0 <= int(seed) < 2**64:
            raise ValueError(f"nibble.optim: seed must be in [0, 2^64), got {seed}")
        if not defaults["lr"] >= 0:
            raise ValueError(f"nibble.optim: lr must be >= 0, got {defaults['lr']}")
        super().__init__(params, defaults)
        self.max_grad_norm = max_grad_norm
        self.seed = int(seed)
        self.on_nonfinite = on_nonfinite
        #: What the last step() did: skipped (bool), bad_param (name or None), grad_norm, clip.
        self.last_step: dict = {"skipped": False, "bad_param": None, "grad_norm": None, "clip": 1.0}

    def add_param_group(self, param_group: dict) -> None:
        for key, valid in (("state", STATE_CODECS), ("master", MASTERS)):
            if key in param_group:
                _check_choice(key, param_group[key], valid)
        super().add_param_group(param_group)
        for p in self.param_groups[-1]["params"]:
            if p.dtype not in (torch.float32, torch.bfloat16):
                raise TypeError(f"nibble.optim.{self._KIND}: parameter dtype {p.dtype} is not supported; "
                                "use torch.float32 or torch.bfloat16")
            if p.device.type != "cpu":
                raise ValueError(f"nibble.optim.{self._KIND}: parameter on {p.device}; this build steps CPU tensors "
                                 "(the CUDA kernel is C++-only for now)")

    # ---- subclass interface -------------------------------------------------------------------------
    def _moment_keys(self, group: dict) -> tuple:
        raise NotImplementedError

    def _update(self, group, params, grads, states, bases, names, grad_scale) -> None:
        raise NotImplementedError

    # ---- helpers ---------------------------------------------------------------------------------------
    def _names_and_bases(self):
        """Name (for messages) and global element index base (for stochastic rounding keys) of every param."""
        names, bases, base = {}, {}, 0
        for gi, group in enumerate(self.param_groups):
            given = group.get("param_names")
            for pi, p in enumerate(group["params"]):
                names[p] = given[pi] if given else f"param_groups[{gi}]['params'][{pi}] (shape {tuple(p.shape)})"
                bases[p] = base
                base += p.numel()
        return names, bases

    def _uses_master(self, p: torch.Tensor, group: dict) -> bool:
        return group["master"] == "fp32" and p.dtype == torch.bfloat16

    def _expected_state(self, p: torch.Tensor, group: dict) -> dict:
        """key -> (dtype, numel, shape or None) of every state tensor of p."""
        n = p.numel()
        layout = _C.optim_state_layout(group["state"], n)
        expected = {"step": (torch.int64, 1, ())}
        value_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}.get(layout["codec"], torch.uint8)
        for key in self._moment_keys(group):
            expected[key] = (value_dtype, n, tuple(p.shape) if value_dtype != torch.uint8 else (n,))
            for side in _SIDE:
                if layout["has_" + side]:
                    expected[f"{key}_{side}"] = (torch.float32, layout["groups"], (layout["groups"],))
        if self._uses_master(p, group):
            expected["master"] = (torch.float32, n, tuple(p.shape))
        return expected

    def _init_state(self, p: torch.Tensor, group: dict) -> dict:
        state = self.state[p]
        if state:
            return state
        for key, (dtype, _, shape) in self._expected_state(p, group).items():
            # Zero codes decode to 0 in every codec (scale 0 / absmax 0); k and centre start at 1.
            fill = 1.0 if key.endswith("_k") or key.endswith("_centre") else 0.0
            state[key] = torch.full(shape, fill, dtype=dtype)
        if "master" in state:
            state["master"].copy_(p.detach())
        return state

    # ---- the step --------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        names, bases = self._names_and_bases()
        work = []  # (group, [params])
        all_grads = []
        for group in self.param_groups:
            params = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ValueError(f"nibble.optim.{self._KIND}: sparse gradient for {names[p]} is not supported")
                params.append(p)
                all_grads.append(p.grad if p.grad.is_contiguous() else p.grad.contiguous())
            work.append((group, params))
        if not all_grads:
            return loss
        sum_squares, bad, element = _C.optim_check_gradients(all_grads)
        if bad >= 0:
            bad_param = [p for _, params in work for p in params][bad]
            name = names[bad_param]
            message = (f"nibble.optim.{self._KIND}: non-finite gradient (NaN/Inf) in parameter '{name}' "
                       f"(element {element}); the step was skipped, no parameter or state changed")
            self.last_step = {"skipped": True, "bad_param": name, "grad_norm": math.inf, "clip": 0.0}
            if self.on_nonfinite == "raise":
                raise NonFiniteGradientError(message, name)
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            return loss
        grad_norm = math.sqrt(sum_squares)
        clip = 1.0
        if self.max_grad_norm is not None:
            clip = min(1.0, self.max_grad_norm / (grad_norm + 1e-6))  # torch.nn.utils.clip_grad_norm_'s rule
        offset = 0
        for group, params in work:
            grads = all_grads[offset:offset + len(params)]
            offset += len(params)
            if not params:
                continue
            states = [self._init_state(p, group) for p in params]
            self._update(group, [p.detach() for p in params], grads, states, [bases[p] for p in params],
                         [names[p] for p in params], clip)
        self.last_step = {"skipped": False, "bad_param": None, "grad_norm": grad_norm, "clip": clip}
        return loss

    # ---- state -----------------------------------------------------------------------------------------
    def load_state_dict(self, state_dict: dict) -> None:
        """Loads a state_dict() bit for bit. torch's loader casts floating state to the parameter dtype
        (which would round FP32 scales and moments of bfloat16 parameters); here every tensor is copied
        as saved, after checking it has the layout its codec needs."""
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        own = [p for g in self.param_groups for p in g["params"]]
        if len(saved_ids) != len(own):
            raise ValueError(f"nibble.optim: the state_dict has {len(saved_ids)} parameters, the optimizer {len(own)}")
        saved_state = state_dict["state"]
        super().load_state_dict(state_dict)
        names, _ = self._names_and_bases()
        group_of = {p: g for g in self.param_groups for p in g["params"]}
        for sid, p in zip(saved_ids, own):
            if sid not in saved_state:
                self.state.pop(p, None)
                continue
            saved = saved_state[sid]
            expected = self._expected_state(p, group_of[p])
            if set(saved) != set(expected):
                raise ValueError(f"nibble.optim: saved state of '{names[p]}' has keys {sorted(saved)}; codec "
                                 f"{group_of[p]['state']!r} with master={group_of[p]['master']!r} needs "
                                 f"{sorted(expected)}")
            for key, (dtype, numel, _) in expected.items():
                t = saved[key]
                if not isinstance(t, torch.Tensor) or t.dtype != dtype or t.numel() != numel:
                    raise ValueError(f"nibble.optim: saved state '{key}' of '{names[p]}' must be a {dtype} tensor of "
                                     f"{numel} elements, got {getattr(t, 'dtype', type(t))} with "
                                     f"{getattr(t, 'numel', lambda: '?')()} elements")
            self.state[p] = {key: saved[key].detach().to("cpu").clone().contiguous() for key in expected}

    def state_bytes(self, include_master: bool = False) -> int:
        """Bytes of optimizer state for all parameters: moment codes or values plus their side data (scales,
        k, centres) per the codec's layout (allocated or not yet); with ``include_master``, FP32 masters."""
        total = 0
        for group in self.param_groups:
            for p in group["params"]:
                total += _C.optim_state_layout(group["state"], p.numel())["bytes"] * len(self._moment_keys(group))
                if include_master and self._uses_master(p, group):
                    total += 4 * p.numel()
        return total

    def bytes_per_param(self, include_master: bool = False) -> float:
        n = sum(p.numel() for g in self.param_groups for p in g["params"])
        return self.state_bytes(include_master) / max(n, 1)


class AdamW(_FusedOptimizer):
    """AdamW (decoupled weight decay, bias correction) with compressed states; see the module docstring."""

    _KIND = "AdamW"

    def __init__(self, params, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, state: str = "fp32", master: str = "fp32",
                 max_grad_norm: Optional[float] = None, seed: int = 0, stochastic_rounding: bool = True,
                 dre_clamp_k: bool = False, on_nonfinite: str = "skip"):
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"nibble.optim.AdamW: betas must be in [0, 1), got {betas}")
        if not eps >= 0.0 or not weight_decay >= 0.0:
            raise ValueError(f"nibble.optim.AdamW: eps and weight_decay must be >= 0, got {eps}, {weight_decay}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, state=state, master=master,
                        stochastic_rounding=stochastic_rounding, dre_clamp_k=dre_clamp_k)
        super().__init__(params, defaults, max_grad_norm, seed, on_nonfinite)

    def _moment_keys(self, group):
        return ("exp_avg", "exp_avg_sq")

    def _update(self, group, params, grads, states, bases, names, grad_scale):
        beta1, beta2 = group["betas"]
        _C.optim_adamw_update(params, grads, states, bases, names, group["state"], float(group["lr"]), float(beta1),
                              float(beta2), float(group["eps"]), float(group["weight_decay"]), self.seed,
                              float(grad_scale), bool(group["stochastic_rounding"]), bool(group["dre_clamp_k"]))


class SGD(_FusedOptimizer):
    """SGD with momentum (torch.optim.SGD's rule: coupled weight decay, dampening, Nesterov) whose momentum
    buffer uses a state codec; see the module docstring."""

    _KIND = "SGD"

    def __init__(self, params, lr: float = 1e-2, momentum: float = 0.9, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, state: str = "fp32", master: str = "fp32",
                 max_grad_norm: Optional[float] = None, seed: int = 0, stochastic_rounding: bool = True,
                 dre_clamp_k: bool = False, on_nonfinite: str = "skip"):
        if not momentum >= 0.0 or not weight_decay >= 0.0 or not 0.0 <= dampening <= 1.0:
            raise ValueError(f"nibble.optim.SGD: momentum, weight_decay must be >= 0 and dampening in [0, 1], got "
                             f"{momentum}, {weight_decay}, {dampening}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nibble.optim.SGD: nesterov needs momentum > 0 and dampening 0")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                        state=state, master=master, stochastic_rounding=stochastic_rounding,
                        dre_clamp_k=dre_clamp_k)
        super().__init__(params, defaults, max_grad_norm, seed, on_nonfinite)

    def _moment_keys(self, group):
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _update(self, group, params, grads, states, bases, names, grad_scale):
        _C.optim_sgd_update(params, grads, states, bases, names, group["state"], float(group["lr"]),
                            float(group["momentum"]), float(group["dampening"]), float(group["weight_decay"]),
                            bool(group["nesterov"]), self.seed, float(grad_scale), bool(group["stochastic_rounding"]),
                            bool(group["dre_clamp_k"]))


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
    _check_choice("state codec", codec, STATE_CODECS)
    return _C.optim_encode_state(x.detach().float().contiguous().reshape(-1), codec, signed, seed)


def decode_state(encoded: dict, codec: str, numel: int, signed: bool = True) -> torch.Tensor:
    """Decodes :func:`encode_state`'s output to a flat float32 tensor."""
    _check_choice("state codec", codec, STATE_CODECS)
    return _C.optim_decode_state(encoded, codec, int(numel), signed)


def dynamic_map(signed: bool = True) -> torch.Tensor:
    """The 256-entry int8 dynamic code (sorted), signed (first moment) or unsigned (second moment)."""
    return _C.optim_dynamic_map(signed)


__all__ = ["AdamW", "SGD", "NonFiniteGradientError", "STATE_CODECS", "lr_factor", "lr_schedule", "encode_state",
           "decode_state", "dynamic_map", "SCHEDULES"]

