"""nibble.models: the GPT that ``nibble-train`` trains, as a ``torch.nn.Module``.

``GPT(config)`` builds nibble's C++ model (core/model/gpt.h) exactly as nibble-train does (launch/model_layout.h):
the same ``[model]`` keys, parameter names and initial values (each full tensor drawn from ``(model.seed, name)``,
then this rank's tp shard cut from it). ``config`` is a dict of ``[model]`` keys (or of sections:
``{"model": {...}, "parallel": {"reproducible_sums": True}}``), the path of a nibble-train TOML file, or a
:class:`TrainConfig`; nibble-train's own parser checks it, so an unknown key or a bad value fails with the message
nibble-train gives::

    model = nibble.models.GPT({"hidden": 64, "layers": 2, "heads": 4, "seq_len": 32, "recipe": "nvfp4"})
    loss = model(tokens, targets)          # int64 [batch, seq] each; mean cross-entropy, C++ autograd graph
    loss.backward()                        # gradients in the C++ model's leaf tensors = model.parameters()
    opt = nibble.optim.AdamW(model.parameters(), lr=3e-3)

Under ``mpirun`` with ``mesh = nibble.parallel.Mesh(tp=2, dp=...)``, ``GPT(config, mesh=mesh)`` holds this rank's
tp shards (Megatron's split; ``parallel.sequence_parallel`` from the config) and offers the trainer's steps between
backward and the optimizer over the mesh: ``all_reduce_replicated_grads``, ``average_gradients`` (dp),
``grad_norm`` (global, over tp) and ``reduce_delayed_amaxes``. pp and cp stay nibble-train's.
``TrainBatches(config, mesh)`` gives a step's micro-batches as nibble-train draws them. examples/train_gpt.py puts
these together and reproduces nibble-train's per-step losses bit for bit (docs/TRAINING.md, "From Python").
"""
from __future__ import annotations

import json
import math
import os
from typing import Iterator, Optional, Union

import torch

from . import _C

__all__ = ["GPT", "TrainConfig", "TrainBatches", "load_config"]

TrainConfig = _C.TrainConfig
ConfigLike = Union[dict, str, "os.PathLike[str]", "_C.TrainConfig"]


def _toml_value(key: str, value) -> str:
    """A Python scalar as TOML text; nibble-train's parser then checks the key and the type."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else
                                                          ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string (JSON's escapes are TOML's)
    raise ValueError(f"nibble.models: config key {key} = {value!r} has the wrong type; a value must be a bool, "
                     f"int, float or str")


def _sections(config: dict) -> dict:
    """{"model": {...}, ...} from a dict of [model] keys or of sections (copied: the caller's dict is not changed)."""
    nested = [isinstance(v, dict) for v in config.values()]
    if any(nested) and not all(nested):
        raise ValueError("nibble.models: a config dict holds either [model] keys (hidden=..., layers=...) or "
                         "sections ({'model': {...}, 'parallel': {...}}), not both")
    if config and all(nested):
        return {str(s): dict(keys) for s, keys in config.items()}
    return {"model": dict(config)}


def _as_toml(sections: dict) -> str:
    lines = []
    for section, keys in sections.items():
        lines.append(f"[{json.dumps(section)}]")
        for key, value in keys.items():
            lines.append(f"{json.dumps(str(key))} = {_toml_value(f'{section}.{key}', value)}")
    return "\n".join(lines) + "\n"


def load_config(config: ConfigLike, overrides: Optional[dict] = None) -> "_C.TrainConfig":
    """nibble-train's config from a dict, a TOML path or a TrainConfig; ``overrides`` as nibble-train's command
    line takes them ({"train.steps": 5}), applied after the dict or file. Keys and types are checked (ValueError
    with nibble-train's message); the cross-key rules run in ``config.validate(world_size)`` (what nibble-train
    runs before training) and the model's when the GPT is built."""
    if isinstance(config, _C.TrainConfig):
        if overrides:
            raise ValueError("nibble.models.load_config: overrides apply to a dict or a TOML path, not to a loaded "
                             "TrainConfig")
        return config
    if isinstance(config, dict):
        sections = _sections(config)
        for key, value in (overrides or {}).items():
            section, dot, name = str(key).partition(".")
            if not dot:
                raise ValueError(f"nibble.models.load_config: override key {key!r} is not 'section.key'")
            sections.setdefault(section, {})[name] = value
        return _C.TrainConfig.from_toml(_as_toml(sections), "nibble.models config")
    if isinstance(config, (str, os.PathLike)):
        path = os.fspath(config)
        if not os.path.isfile(path):
            raise ValueError(f"nibble.models: config file '{path}' does not exist")
        pairs = [(str(k), _override_text(v)) for k, v in (overrides or {}).items()]
        return _C.TrainConfig.load(path, pairs)
    raise TypeError(f"nibble.models: config must be a dict of [model] keys, a TOML path or a TrainConfig, got "
                    f"{type(config).__name__}")


def _override_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _mesh_impl(mesh):
    if mesh is None:
        return None
    impl = getattr(mesh, "_mesh", mesh)
    if not isinstance(impl, _C.ParallelMesh):
        raise TypeError(f"nibble.models: mesh must be a nibble.parallel.Mesh, got {type(mesh).__name__}")
    return impl


class GPT(torch.nn.Module):
    """nibble-train's GPT (see the module docstring). ``parameters()`` / ``named_parameters()`` are the C++
    model's leaf tensors (float32, this rank's shards), in nibble-train's order and with its names."""

    def __init__(self, config: ConfigLike, mesh=None):
        super().__init__()
        self.mesh = mesh  # held: the C++ model's groups belong to it
        self._impl = _C.GptModel(load_config(config), _mesh_impl(mesh))
        # The Python objects of the C++ leaves, kept so that each stays the same object (optimizer states and
        # hooks are keyed by it). They are not nn.Parameters: wrapping one would make a new tensor, and the C++
        # graph accumulates gradients into the original.
        self._leaves = list(self._impl.named_parameters())
        self._info = {p["name"]: p for p in self._impl.param_info()}

    # ---- the model ----------------------------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over this rank's tokens (int64 [batch, seq] tokens and targets, seq <= seq_len)."""
        return self._impl.loss(tokens, targets)

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """This rank's vocabulary slice of the logits: [batch * seq, vocab / tp]."""
        return self._impl.logits(tokens)

    def set_rounding_stream(self, stream: int, chunk: int = -1) -> None:
        """Keys every Linear's stochastic rounding by ``stream`` (nibble-train passes (step, global micro-batch)
        as TrainBatches gives it), so the bits drawn depend on the data, not on how often the model ran."""
        self._impl.set_rounding_stream(int(stream), int(chunk))

    def end_step(self) -> None:
        """Once per optimizer step: delayed scaling folds the step's amaxes into its histories."""
        self._impl.end_step()

    def linear_states(self) -> list:
        """Every Linear's C++ state (named "layers.0.qkv", ..., "lm_head"): what nibble.nn.quantization_stats
        measures through."""
        return list(self._impl.linear_states())

    # ---- parameters ----------------------------------------------------------------------------------------
    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple]:
        for name, tensor in self._leaves:
            yield prefix + name, tensor

    def parameter_info(self, name: str) -> dict:
        """name, shard_dim (-1: replicated over tp), full_shape, tied_copy of one parameter."""
        if name not in self._info:
            raise KeyError(f"nibble.models.GPT: no parameter {name!r}; parameters: {', '.join(self._info)}")
        return dict(self._info[name])

    def zero_grad(self, set_to_none: bool = True) -> None:
        for _, p in self._leaves:
            if p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.zero_()

    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False) -> dict:
        """This rank's parameters by nibble-train's names (shards under tp), sharing memory with the model."""
        out = {} if destination is None else destination
        for name, p in self._leaves:
            out[prefix + name] = p if keep_vars else p.detach()
        return out

    def load_state_dict(self, state_dict: dict, strict: bool = True, assign: bool = False):
        """Copies the tensors into the model's parameters in place (the same leaves stay in use)."""
        if assign:
            raise ValueError("nibble.models.GPT.load_state_dict: assign=True would replace the C++ model's "
                             "leaves; only copying is supported")
        names = [n for n, _ in self._leaves]
        missing = [n for n in names if n not in state_dict]
        unexpected = [k for k in state_dict if k not in set(names)]
        if strict and (missing or unexpected):
            raise ValueError(f"nibble.models.GPT.load_state_dict: missing {missing}, unexpected {unexpected}")
        with torch.no_grad():
            for name, p in self._leaves:
                if name not in state_dict:
                    continue
                src = state_dict[name]
                if tuple(src.shape) != tuple(p.shape):
                    raise ValueError(f"nibble.models.GPT.load_state_dict: {name} has shape {tuple(src.shape)}, the "
                                     f"model's (this rank's shard) is {tuple(p.shape)}")
                p.copy_(src)
        return torch.nn.modules.module._IncompatibleKeys(missing, unexpected)

    # ---- the trainer's steps between backward and the optimizer (launch/grad_sync.h) ----------------------
    def all_reduce_replicated_grads(self) -> None:
        """Under sequence parallel: sums the norm weights' gradients over tp (a no-op otherwise)."""
        self._impl.all_reduce_replicated_grads()

    def average_gradients(self) -> None:
        """Every .grad averaged over the mesh's dp x cp ranks (one flat all-reduce in parameter order)."""
        self._impl.average_gradients()

    def grad_norm(self) -> float:
        """The global gradient norm nibble-train clips by (tp shards summed over tp, replicated weights once)."""
        return self._impl.grad_norm()

    def reduce_delayed_amaxes(self) -> None:
        """Delayed scaling: this step's amaxes max-reduced over tp x dp x cp (before end_step)."""
        self._impl.reduce_delayed_amaxes()

    def mean_over_dp(self, value: float) -> float:
        """The mean of a number over the dp x cp ranks (the loss nibble-train reports)."""
        return self._impl.mean_over_dp(float(value))

    @property
    def config(self) -> "_C.TrainConfig":
        """The config the model was built from (the layout set by the mesh)."""
        return self._impl.config

    @property
    def tp_rank(self) -> int:
        return self._impl.tp_rank

    @property
    def tp_size(self) -> int:
        return self._impl.tp_size

    def extra_repr(self) -> str:
        n = sum(p.numel() for _, p in self._leaves)
        return f"{len(self._leaves)} tensors, {n} parameters on this rank, tp {self.tp_rank}/{self.tp_size}"


class TrainBatches:
    """One training step's micro-batches of this rank, as nibble-train draws them (launch/micro_batches.h):
    ``step(s)`` -> [(tokens, targets, rounding_stream), ...]. The mesh must have the config's layout."""

    def __init__(self, config: ConfigLike, mesh):
        self.mesh = mesh
        self._impl = _C.TrainBatches(load_config(config), _mesh_impl(mesh))

    def step(self, step: int) -> list:
        return self._impl.step(int(step))
