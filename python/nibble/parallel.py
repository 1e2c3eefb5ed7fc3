"""nibble.parallel: rank bootstrap, the device mesh, and collectives on torch CPU tensors (over MPI).

Launch one process per rank, e.g. ``mpirun -np 4 python train.py``; then::

    rt = nibble.parallel.init()                 # MPI starts here (never at import): rt.rank, rt.world_size, ...
    mesh = nibble.parallel.Mesh(tp=2, dp=2, model=dict(num_heads=8, hidden=512))  # validated, groups made up front
    mesh.tp.all_reduce(x)                       # in place, sum
    shards = mesh.dp.reduce_scatter(grads, op="avg")
    nibble.parallel.set_step(step)              # named in timeout errors

Every call has a deadline (``init(deadline=...)``, per group ``group.deadline = s``): a peer that never arrives
raises RuntimeError naming the group, the op, this rank and the step instead of hanging; the group is unusable
afterwards. Argument mistakes raise ValueError (TypeError for an unsupported dtype) before anything is sent.
Contiguous CPU tensors are communicated in place (zero copy); other tensors go through a contiguous copy, and
CUDA tensors through a host-staged copy (the MPI backend; compiled, not run without a GPU).
Gathers and scatters work along dim 0 and take their counts in rows of dim 0.
"""
from __future__ import annotations

import atexit
import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

from . import _C

__all__ = ["Runtime", "init", "is_initialized", "shutdown", "set_step", "current_step", "world", "Group", "Mesh",
           "validate_mesh", "group_members", "all_reduce", "all_gather", "reduce_scatter", "broadcast", "barrier"]


@dataclass(frozen=True)
class Runtime:
    """What init() found: this rank, the world, the node-local rank, the bound CUDA device (-1 without one)."""
    rank: int
    world_size: int
    local_rank: int
    local_size: int
    device: int
    device_count: int
    hostname: str
    launcher: str  # "openmpi", "pmi", "slurm" or "none" (a singleton run without a launcher)
    deadline: float  # seconds, the default of every group
    env: dict = field(repr=False)  # the launcher variables as read (OMPI_COMM_WORLD_RANK, PMI_RANK, SLURM_PROCID...)


_runtime: Optional[Runtime] = None
_atexit_registered = False


def init(deadline: float = 300.0, select_device: bool = True) -> Runtime:
    """Initialises MPI (unless already initialised), reads rank / size / local rank, binds the local rank to a
    CUDA device when there is one, and creates the world group. Idempotent: later calls return the first result."""
    global _runtime, _atexit_registered
    if _runtime is not None and _C.parallel_is_initialized():
        return _runtime
    info = _C.parallel_init(float(deadline), bool(select_device))
    # The module's C++ runtime leaves the GPU to torch (whose CUDA runtime this process uses): local rank -> GPU.
    device, device_count = -1, torch.cuda.device_count() if torch.cuda.is_available() else 0
    if select_device and device_count > 0:
        device = info["local_rank"] % device_count
        torch.cuda.set_device(device)
    _runtime = Runtime(rank=info["rank"], world_size=info["world_size"], local_rank=info["local_rank"],
                       local_size=info["local_size"], device=device, device_count=device_count,
                       hostname=info["hostname"], launcher=info["env"]["launcher"], deadline=info["deadline"],
                       env=info["env"])
    if not _atexit_registered:
        atexit.register(shutdown)  # MPI must be finalised before the interpreter exits
        _atexit_registered = True
    return _runtime


def is_initialized() -> bool:
    return _C.parallel_is_initialized()


def shutdown() -> None:
    """Finalises MPI (once; only if init() initialised it). Groups must not be used afterwards."""
    global _runtime
    _runtime = None
    _C.parallel_shutdown()


def set_step(step: int) -> None:
    """The training step named in timeout errors (process-wide; call once per step)."""
    _C.parallel_set_step(int(step))


def current_step() -> int:
    return _C.parallel_current_step()


def _rows(t: torch.Tensor) -> int:
    return math.prod(t.shape[1:]) if t.dim() > 0 else 1


def _elements(counts: Optional[Sequence[int]], row: int) -> Optional[list]:
    return None if counts is None else [int(c) * row for c in counts]


def _contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.is_contiguous() else t.contiguous()


class Group:
    """A process group (the world, or a group of a Mesh). Collectives act on torch CPU tensors."""

    def __init__(self, get: Callable[[], "_C.Communicator"], keep_alive=None):
        self._get = get
        self._keep_alive = keep_alive  # the Mesh that owns the C++ group

    @property
    def _comm(self):
        return self._get()

    name = property(lambda self: self._comm.name)
    rank = property(lambda self: self._comm.rank)
    size = property(lambda self: self._comm.size)
    members = property(lambda self: list(self._comm.members), doc="world rank of each group rank")
    failed = property(lambda self: self._comm.failed, doc="True after a timeout: the group is unusable")

    @property
    def deadline(self) -> float:
        return self._comm.deadline

    @deadline.setter
    def deadline(self, seconds: float) -> None:
        self._comm.deadline = float(seconds)

    def __repr__(self) -> str:
        c = self._comm
        return f"Group({c.name!r}, rank={c.rank}, size={c.size}, members={list(c.members)})"

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """In place: tensor = op over the group ("sum", "max", "avg"). Returns tensor."""
        work = _contiguous(tensor)
        self._comm.all_reduce(work, op)
        if work is not tensor:
            tensor.copy_(work)
        return tensor

    def all_gather(self, tensor: torch.Tensor, counts: Optional[Sequence[int]] = None,
                   out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Concatenates every rank's tensor along dim 0. counts[r] = rows of rank r (None: all equal)."""
        src = _contiguous(tensor)
        rows = sum(counts) if counts is not None else src.shape[0] * self.size if src.dim() > 0 else self.size
        if out is None:
            shape = (rows,) + tuple(src.shape[1:]) if src.dim() > 0 else (rows,)
            out = torch.empty(shape, dtype=src.dtype, device=src.device)
        work = _contiguous(out)
        self._comm.all_gather(work, src, _elements(counts, _rows(src)))
        if work is not out:
            out.copy_(work)
        return out

    def reduce_scatter(self, tensor: torch.Tensor, op: str = "sum", counts: Optional[Sequence[int]] = None,
                       out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Reduces over the group, then rank r keeps its part of dim 0 (counts[r] rows; None: equal parts)."""
        src = _contiguous(tensor)
        if src.dim() == 0:
            raise ValueError("nibble.parallel.reduce_scatter: the input needs at least one dimension")
        if counts is None:
            if src.shape[0] % self.size != 0:
                raise ValueError(f"nibble.parallel.reduce_scatter: dim 0 of the input ({src.shape[0]}) is not "
                                 f"divisible by the group size ({self.size}); pass counts for uneven parts")
            mine = src.shape[0] // self.size
        else:
            if len(counts) != self.size:
                raise ValueError(f"nibble.parallel.reduce_scatter: counts has {len(counts)} entries; it needs one "
                                 f"per rank ({self.size})")
            mine = int(counts[self.rank])
        if out is None:
            out = torch.empty((mine,) + tuple(src.shape[1:]), dtype=src.dtype, device=src.device)
        work = _contiguous(out)
        self._comm.reduce_scatter(work, src, op, _elements(counts, _rows(src)))
        if work is not out:
            out.copy_(work)
        return out

    def all_to_all(self, tensor: torch.Tensor, send_counts: Optional[Sequence[int]] = None,
                   recv_counts: Optional[Sequence[int]] = None, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Block j of dim 0 goes to rank j; block i of the result came from rank i (counts in rows)."""
        src = _contiguous(tensor)
        if out is None:
            rows = src.shape[0] if recv_counts is None else sum(recv_counts)
            out = torch.empty((rows,) + tuple(src.shape[1:]), dtype=src.dtype, device=src.device)
        work = _contiguous(out)
        row = _rows(src)
        self._comm.all_to_all(work, src, _elements(send_counts, row), _elements(recv_counts, row))
        if work is not out:
            out.copy_(work)
        return out

    def broadcast(self, tensor: torch.Tensor, root: int = 0) -> torch.Tensor:
        """In place: every rank gets root's tensor (root is a group rank)."""
        work = _contiguous(tensor)
        self._comm.broadcast(work, int(root))
        if work is not tensor:
            tensor.copy_(work)
        return tensor

    def send(self, tensor: torch.Tensor, peer: int, tag: int = 0) -> None:
        self._comm.send(_contiguous(tensor), int(peer), int(tag))

    def recv(self, tensor: torch.Tensor, peer: int, tag: int = 0) -> torch.Tensor:
        """Receives exactly tensor.numel() elements from peer into tensor."""
        work = _contiguous(tensor)
        self._comm.recv(work, int(peer), int(tag))
        if work is not tensor:
            tensor.copy_(work)
        return tensor

    def send_recv(self, send: torch.Tensor, dst: int, recv: torch.Tensor, src: int, tag: int = 0) -> torch.Tensor:
        """Sends to dst and receives from src as one paired operation (ring exchanges). Returns recv."""
        work = _contiguous(recv)
        self._comm.send_recv(_contiguous(send), int(dst), work, int(src), int(tag))
        if work is not recv:
            recv.copy_(work)
        return recv

    def barrier(self) -> None:
        self._comm.barrier()


def world() -> Group:
    """The world group (looked up on every call, so it never outlives the runtime)."""
    return Group(_C.parallel_world)


class Mesh:
    """Dims tp, cp, dp, pp with tp fastest (world rank = tp + t*(cp + c*(dp + d*pp)), Megatron's order).

    Collective over the world: the shape (and the model, if given) is validated before anything is allocated,
    every rank must ask for the same shape, then all groups are created in one fixed order. ``model`` keys:
    num_heads, num_kv_heads, hidden, ffn_hidden, vocab, num_layers, seq_len, sequence_parallel.
    """

    GROUPS = ("tp", "cp", "dp", "pp", "dp_cp", "tp_dp_cp")

    def __init__(self, tp: int = 1, cp: int = 1, dp: int = 1, pp: int = 1, *, model: Optional[dict] = None,
                 deadline: Optional[float] = None):
        self._mesh = _C.ParallelMesh(int(tp), int(cp), int(dp), int(pp), dict(model or {}),
                                     None if deadline is None else float(deadline))
        mesh = self._mesh  # captured directly (not through self): no reference cycle
        self._groups = {name: Group(lambda name=name: mesh.group(name), keep_alive=mesh) for name in self.GROUPS}

    shape = property(lambda self: self._mesh.shape, doc="(tp, cp, dp, pp)")
    coord = property(lambda self: self._mesh.coord, doc="this rank's (tp, cp, dp, pp) coordinates")
    tp = property(lambda self: self._groups["tp"])
    cp = property(lambda self: self._groups["cp"])
    dp = property(lambda self: self._groups["dp"])
    pp = property(lambda self: self._groups["pp"])
    dp_cp = property(lambda self: self._groups["dp_cp"], doc="gradient reduction with context parallelism")
    tp_dp_cp = property(lambda self: self._groups["tp_dp_cp"], doc="FP8 amax reduction (never across pp)")

    def group(self, name: str) -> Group:
        if name not in self._groups:
            raise ValueError(f"nibble.parallel: unknown group {name!r}; valid: {', '.join(self.GROUPS)}")
        return self._groups[name]

    def __repr__(self) -> str:
        tp, cp, dp, pp = self.shape
        return f"Mesh(tp={tp}, cp={cp}, dp={dp}, pp={pp}, coord={self.coord})"


def validate_mesh(tp: int = 1, cp: int = 1, dp: int = 1, pp: int = 1, *, world_size: int,
                  model: Optional[dict] = None) -> None:
    """Checks a mesh against a world size and a model without MPI (e.g. before launching); raises ValueError
    listing every constraint that fails."""
    _C.parallel_validate_mesh(int(tp), int(cp), int(dp), int(pp), int(world_size), dict(model or {}))


def group_members(kind: str, rank: int, tp: int = 1, cp: int = 1, dp: int = 1, pp: int = 1) -> list:
    """World ranks of the `kind` group holding `rank` in mesh (tp, cp, dp, pp), by group rank (no MPI needed)."""
    return list(_C.parallel_group_members(int(tp), int(cp), int(dp), int(pp), kind, int(rank)))


# Collectives on the world group (or on `group`).
def all_reduce(tensor: torch.Tensor, op: str = "sum", group: Optional[Group] = None) -> torch.Tensor:
    return (group or world()).all_reduce(tensor, op)


def all_gather(tensor: torch.Tensor, counts: Optional[Sequence[int]] = None, group: Optional[Group] = None,
               out: Optional[torch.Tensor] = None) -> torch.Tensor:
    return (group or world()).all_gather(tensor, counts, out)


def reduce_scatter(tensor: torch.Tensor, op: str = "sum", counts: Optional[Sequence[int]] = None,
                   group: Optional[Group] = None, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    return (group or world()).reduce_scatter(tensor, op, counts, out)


def broadcast(tensor: torch.Tensor, root: int = 0, group: Optional[Group] = None) -> torch.Tensor:
    return (group or world()).broadcast(tensor, root)


def barrier(group: Optional[Group] = None) -> None:
    (group or world()).barrier()

# Data parallel (gradient buckets, ZeRO-1), defined in nibble.data_parallel and exported here. Like the two
# modules below, it takes groups as communicators and never imports this module, so there is no import cycle.
from .data_parallel import DistributedDataParallel, ZeroAdamW  # noqa: E402,F401

# Context parallel attention (ring, Ulysses) and the load-balanced sequence split, defined in
# nibble.context_parallel and exported here.
from .context_parallel import merge as cp_merge, ring_attention, split as cp_split, ulysses_attention  # noqa: E402,F401

# Tensor and sequence parallel (Megatron regions, column/row-parallel Linear, vocab-parallel embedding and
# cross-entropy), defined in nibble.tensor_parallel and exported here.
from .tensor_parallel import (ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding,  # noqa: E402,F401
                              all_reduce_replicated_grads, copy_to_tensor_parallel, gather_from_sequence_parallel,
                              reduce_from_tensor_parallel, reduce_scatter_to_sequence_parallel,
                              scatter_to_sequence_parallel, tensor_parallel, vocab_parallel_cross_entropy)
