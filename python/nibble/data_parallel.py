"""Data parallelism: ``DistributedDataParallel`` (gradient buckets all-reduced during backward) and
``ZeroAdamW`` (ZeRO-1: optimizer states sharded over the data-parallel group), plus global-norm clipping
across groups and the delayed-scaling amax reduction. Run one process per rank under mpirun, after
``nibble.parallel.init()``::

    mesh = nibble.parallel.Mesh(dp=4)
    model = nibble.data_parallel.DistributedDataParallel(net, group=mesh.dp)   # replicas start equal
    opt = nibble.optim.AdamW(model.parameters(), state="fp8", max_grad_norm=1.0)
    loss = model(x).loss(); loss.backward(); opt.step()    # gradients are averaged when backward returns

    opt = nibble.data_parallel.ZeroAdamW(net, group=mesh.dp, state="fp8", max_grad_norm=1.0)
    loss.backward(); opt.step(); opt.zero_grad()            # reduce-scatter in backward, step, all-gather

Gradients land in one contiguous FP32 buffer, parameters in reverse order of registration (the order backward
produces them), cut into buckets of ``bucket_mb``; a bucket's reduction starts (asynchronously) when the
post-accumulate-grad hooks of all its parameters have fired. Every rank must run the same model. Details and
the numerics (what is bit-identical to a single-rank run, and why): docs/PARALLEL.md "Data parallel and ZeRO-1".
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Optional, Sequence

import torch

from . import _C

# Like nibble.tensor_parallel and nibble.context_parallel, this module works on the C++ communicators and never
# imports nibble.parallel (which re-exports its classes): the dependency runs one way.

__all__ = ["DistributedDataParallel", "ZeroAdamW", "clip_grad_norm_", "reduce_amaxes", "zero_gather_state",
           "zero_split_state"]


def _comm(group):
    """A nibble.parallel.Group (e.g. mesh.dp), a _C.Communicator, or None (the world) -> the C++ communicator."""
    if group is None:
        return _C.parallel_world()
    comm = getattr(group, "_comm", group)
    if not isinstance(comm, _C.Communicator):
        raise TypeError(f"nibble.data_parallel: group must be a nibble.parallel.Group (e.g. mesh.dp), got {type(group)}")
    return comm


def _named(module_or_params) -> list:
    if isinstance(module_or_params, torch.nn.Module):
        named = [(n, p) for n, p in module_or_params.named_parameters() if p.requires_grad]
    else:
        items = list(module_or_params)
        named = [it if isinstance(it, tuple) else (f"param{i}", it) for i, it in enumerate(items)]
    if not named:
        raise ValueError("nibble.data_parallel: no parameters that require grad")
    for name, p in named:
        if p.device.type != "cpu" or not p.is_contiguous():
            raise ValueError(f"nibble.data_parallel: parameter '{name}' must be a contiguous CPU tensor")
    return named


def _broadcast_params(named, group) -> None:
    comm = _comm(group)
    with torch.no_grad():
        for _, p in named:
            comm.broadcast(p.data, 0)  # _named checked: contiguous CPU tensors, communicated in place


class DistributedDataParallel(torch.nn.Module):
    """Wraps a module: replicas start from rank 0's parameters, and every backward ends with each parameter's
    ``.grad`` holding the average over ``group`` (reduced in buckets while backward runs). Use any optimizer
    afterwards (nibble.optim.AdamW with ``max_grad_norm`` clips by the global norm: the averaged gradients
    are the same on every rank). ``no_sync()`` accumulates gradients locally (gradient accumulation)."""

    def __init__(self, module: torch.nn.Module, group=None, bucket_mb: float = 25.0, broadcast_params: bool = True):
        super().__init__()
        self.module = module
        self.group = group  # held: a Mesh's group lives as long as the Mesh
        named = _named(module)
        if broadcast_params:
            _broadcast_params(named, group)
        self._params = [p for _, p in named]
        self._buckets = _C.GradBuckets(named, _comm(group), float(bucket_mb), "all_reduce")
        self._sync = True
        self._finish_queued = False
        self._hooks = [p.register_post_accumulate_grad_hook(self._make_hook(i)) for i, p in enumerate(self._params)]

    def _make_hook(self, index: int):
        def hook(_param):
            if not self._sync:
                return
            if not self._finish_queued:
                # Runs when this backward ends: wait for the buckets, write the averaged grads back.
                torch.autograd.Variable._execution_engine.queue_callback(self._finish)
                self._finish_queued = True
            self._buckets.mark_ready(index)
        return hook

    def _finish(self) -> None:
        self._finish_queued = False
        self._buckets.finish()

    @property
    def num_buckets(self) -> int:
        return self._buckets.num_buckets

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes inside accumulate into .grad without communicating; the next one outside reduces."""
        old, self._sync = self._sync, False
        try:
            yield
        finally:
            self._sync = old

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def clip_grad_norm_(parameters: Iterable[torch.Tensor], max_norm: float, sum_over: Sequence = (),
                    replicated: Optional[Iterable[torch.Tensor]] = None, tp_group=None) -> float:
    """torch.nn.utils.clip_grad_norm_ across groups: the squared norm of this rank's gradients (FP64), summed
    over ``sum_over`` (tp for split weights, pp for stages, dp only for sharded gradients), each element counted
    once: ``replicated`` parameters (copies on every rank of ``tp_group``, e.g. norm weights) count on tp rank 0
    only. Scales the gradients in place by min(1, max_norm/(norm + 1e-6)); returns the norm. The norm and the
    coefficient are the C++ ones the trainer uses (parallel/nn/global_clip.h, optim/clip.h)."""
    params = [p for p in parameters if p.grad is not None]
    rep = {id(p) for p in (replicated or ())}
    count_rep = tp_group is None or _comm(tp_group).rank == 0
    counted = [p.grad.detach() for p in params if count_rep or id(p) not in rep]
    norm = _C.global_grad_norm([(counted, [])], [_comm(g) for g in sum_over])
    clip = _C.clip_coefficient(norm, float(max_norm))
    if clip < 1.0:
        for p in params:
            p.grad.detach().mul_(clip)
    return norm


class ZeroAdamW:
    """ZeRO-1 AdamW (or SGD with ``kind="sgd"``) over the state codecs of nibble.optim ("fp32", "bf16", "fp8",
    "fp8_plain", "int8"): each rank of ``group`` keeps the states (and FP32 masters of bfloat16 parameters) of a
    contiguous shard of the flattened parameters, gradients are reduce-scattered in buckets during backward,
    the shard steps, and the parameters are all-gathered into every replica (``fp8_all_gather=True``: as E4M3
    codes with a scale per 128 elements, which rounds the model's parameters to FP8 values while the shards keep
    the exact ones). ``max_grad_norm`` clips by the global norm, summed over the dp shards and ``norm_groups``
    (e.g. [mesh.tp, mesh.pp]). Hyper-parameters as nibble.optim.AdamW."""

    def __init__(self, module_or_params, group=None, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, state: str = "fp32", master: str = "fp32", seed: int = 0,
                 stochastic_rounding: bool = True, max_grad_norm: Optional[float] = None, bucket_mb: float = 25.0,
                 fp8_all_gather: bool = False, norm_groups: Sequence = (), kind: str = "adamw",
                 momentum: float = 0.0, broadcast_params: bool = True):
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"nibble.data_parallel.ZeroAdamW: max_grad_norm must be > 0 or None, got {max_grad_norm}")
        self.group = group  # held: a Mesh's group lives as long as the Mesh
        self._named = _named(module_or_params)
        if broadcast_params:
            _broadcast_params(self._named, group)
        self.config = dict(kind=kind, state=state, master=master, lr=float(lr), beta1=float(betas[0]),
                           beta2=float(betas[1]), eps=float(eps), weight_decay=float(weight_decay),
                           momentum=float(momentum), stochastic_rounding=bool(stochastic_rounding), seed=int(seed))
        self._zero = _C.ZeroOptimizer(self._named, _C.OptimizerConfig(self.config), _comm(group), float(bucket_mb),
                                      bool(fp8_all_gather))
        self.max_grad_norm = max_grad_norm
        self.norm_groups = list(norm_groups)
        self.last_step: dict = {"skipped": False, "bad_param": None, "grad_norm": None, "clip": 1.0}
        self._hooks = [p.register_post_accumulate_grad_hook(self._make_hook(i))
                       for i, (_, p) in enumerate(self._named)]
        self._sync = True

    def _make_hook(self, index: int):
        def hook(_param):
            if self._sync:
                self._zero.mark_ready(index)
        return hook

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes inside accumulate into .grad without communicating; the next one outside reduces."""
        old, self._sync = self._sync, False
        try:
            yield
        finally:
            self._sync = old

    @property
    def layout(self) -> dict:
        """offset/numel per parameter, buffer order, padded total and shard size of the flat buffer."""
        return self._zero.layout

    def grad_norm(self) -> float:
        """The global norm of the averaged gradients (waits for the reductions): this rank's shard, summed over
        the dp group (disjoint shards) and ``norm_groups``."""
        return _C.global_grad_norm([(self._zero.shard_grads(), [])],
                                   [_comm(self.group)] + [_comm(g) for g in self.norm_groups])

    @torch.no_grad()
    def step(self, lr_factor: float = 1.0):
        clip, norm = 1.0, None
        if self.max_grad_norm is not None:
            norm = self.grad_norm()
            clip = _C.clip_coefficient(norm, self.max_grad_norm)
        applied, bad = self._zero.step(float(lr_factor), float(clip))
        self.last_step = {"skipped": not applied, "bad_param": bad or None, "grad_norm": norm, "clip": clip}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for _, p in self._named:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def sync_from_model(self) -> None:
        """Re-reads this rank's shard from the model (after loading weights into the model from outside)."""
        self._zero.sync_from_model()

    def state_dict(self) -> dict:
        """This rank's shard: {"<param>.<field>": tensor} (gather with zero_gather_state for a full one)."""
        return dict(self._zero.state_dict())

    def load_state_dict(self, state: dict) -> None:
        self._zero.load_state_dict(dict(state))

    def state_bytes(self) -> int:
        return self._zero.state_bytes()

    def param_shapes(self) -> list:
        return [(n, list(p.shape)) for n, p in self._named]


def zero_gather_state(shards: Sequence[dict], param_shapes: list, config: dict) -> dict:
    """Per-rank ZeroAdamW.state_dict()s of one run -> the state of a single-rank optimizer over the full
    parameters (the C++ optim::Optimizer's "<param>.<field>" keys)."""
    return dict(_C.zero_gather_state([dict(s) for s in shards], param_shapes, _C.OptimizerConfig(dict(config))))


def zero_split_state(full: dict, param_shapes: list, config: dict, ranks: int, rank: int) -> dict:
    """The reverse of zero_gather_state: rank ``rank``'s shard for a run with ``ranks`` dp ranks."""
    return dict(_C.zero_split_state(dict(full), param_shapes, _C.OptimizerConfig(dict(config)), int(ranks), int(rank)))


def reduce_amaxes(states: Sequence, group) -> None:
    """Delayed scaling across ranks: max-reduce the pending amax of every nibble DelayedScaling state over
    ``group`` (mesh.tp_dp_cp) in one collective, once per step, before the states' update()."""
    _C.reduce_pending_amaxes(list(states), _comm(group))
