"""nibble.tensor_parallel: Megatron tensor and sequence parallelism running nibble's low-precision recipes.

Under ``mpirun``, with ``mesh = nibble.parallel.Mesh(tp=...)``, every rank builds the same modules over
``mesh.tp``; each holds its shard of the weights:

* ``ColumnParallelLinear``: rows ``[r*out/tp, (r+1)*out/tp)`` of the ``[out, in]`` weight; input full tokens
  (or this rank's token slice under sequence parallel: all-gathered inside, as quantized bytes when the recipe
  quantizes x), output this rank's ``out/tp`` features.
* ``RowParallelLinear``: columns ``[r*in/tp, ...)``; input this rank's features; output all-reduced (or
  reduce-scattered over the tokens under SP); the replicated bias is added after the reduction.
* ``VocabParallelEmbedding`` / ``vocab_parallel_cross_entropy``: vocabulary rows sharded; no rank ever holds
  full-vocabulary logits.
* The regions (``copy_to_tensor_parallel`` ...) are autograd functions whose backward is the conjugate
  collective.

Per-tensor factors (FP8 scales, NVFP4 global amaxes) are max-reduced over the group, so a tp run quantizes with
the scales a single rank would use on the full tensors. The sequence dim is dim 0 ([tokens, hidden] or
[seq, batch, hidden]). Under SP, parameters replicated over the group that see only this rank's tokens (norm
weights, a RowParallelLinear bias) need ``all_reduce_replicated_grads`` after backward.
Recipes: tests/python/test_tensor_parallel.py checks bf16, fp8_current, fp8_delayed, mxfp8, nvfp4, NVFP4 with
round-to-nearest gradients and mxfp4_quartet against nibble's single-rank Linear. mxfp4_quartet's QuEST groups of
32 run along the input features, so a RowParallelLinear needs in_features/tp divisible by 32 (ValueError otherwise).
Under fp8_delayed the ranks agree on the scales when the amax histories are max-reduced over the group once per step
(C++: parallel/nn/amax_reduction.h) before ``end_step`` (the first step's scales agree trivially).
"""
from __future__ import annotations

import math
from typing import Iterable, Optional

import torch

from . import _C
from .nn import RecipeLike, _LinearStates

__all__ = ["tensor_parallel", "ColumnParallelLinear", "RowParallelLinear", "VocabParallelEmbedding",
           "vocab_parallel_cross_entropy", "all_reduce_replicated_grads", "copy_to_tensor_parallel",
           "reduce_from_tensor_parallel", "scatter_to_sequence_parallel", "gather_from_sequence_parallel",
           "reduce_scatter_to_sequence_parallel", "communicated_bytes", "reset_communicated_bytes"]


def _comm(group):
    """A nibble.parallel.Group (or a raw _C.Communicator) -> the C++ communicator."""
    return group._comm if hasattr(group, "_comm") else group


def tensor_parallel(group, sequence_parallel: bool = False) -> "_C.TensorParallel":
    """The C++ TensorParallel over `group` (what nibble's GPT model calls)."""
    return _C.TensorParallel(_comm(group), bool(sequence_parallel))


def _split(total: int, size: int, what: str) -> int:
    if total % size != 0:
        raise ValueError(f"nibble.tensor_parallel: {what} = {total} is not divisible by the tensor-parallel size "
                         f"{size}")
    return total // size


class _ParallelLinear(_LinearStates):
    def __init__(self, group, sequence_parallel: bool, recipe: RecipeLike, name: Optional[str], seed: Optional[int]):
        # Without a seed the layer keys its stochastic rounding by its name (nibble.nn.layer_seed): the same on
        # every tp rank, so each shard draws the bits of its elements' places in the whole tensor.
        super().__init__(recipe, name, seed, type(self).__name__.lower())
        self.group = group  # keeps the Mesh (and its communicator) alive
        self._tp = tensor_parallel(group, sequence_parallel)
        self.tp_rank, self.tp_size = self._tp.rank, self._tp.size
        self.sequence_parallel = bool(sequence_parallel)


class ColumnParallelLinear(_ParallelLinear):
    """y[:, this rank's out/tp features] = x Wᵀ + b, W split along its output rows."""

    def __init__(self, in_features: int, out_features: int, group, *, sequence_parallel: bool = False,
                 bias: bool = False, recipe: RecipeLike = None, name: Optional[str] = None, seed: Optional[int] = None,
                 dtype: torch.dtype = torch.float32):
        super().__init__(group, sequence_parallel, recipe, name, seed)
        self.in_features, self.out_features = in_features, out_features
        local = _split(out_features, self.tp_size, "out_features")
        self.weight = torch.nn.Parameter(torch.empty(local, in_features, dtype=dtype))
        self.bias = torch.nn.Parameter(torch.zeros(local, dtype=dtype)) if bias else None
        bound = 1.0 / math.sqrt(in_features)  # kaiming_uniform(a=sqrt(5)) of the full layer
        torch.nn.init.uniform_(self.weight, -bound, bound)

    @torch.no_grad()
    def load_full(self, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> "ColumnParallelLinear":
        """Copies this rank's rows of a full [out, in] weight (and bias)."""
        rows = self.weight.shape[0]
        self.weight.copy_(weight[self.tp_rank * rows:(self.tp_rank + 1) * rows])
        if bias is not None:
            self.bias.copy_(bias[self.tp_rank * rows:(self.tp_rank + 1) * rows])
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._tp.column_linear(x, self.weight, self.bias, self.state_for(self.active_recipe()))

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features} (local {self.weight.shape[0]}), "
                f"sequence_parallel={self.sequence_parallel}, recipe={self.active_recipe().name}")


class RowParallelLinear(_ParallelLinear):
    """y = Σ_ranks x_r W_rᵀ + b, W split along its input columns; the input holds this rank's in/tp features."""

    def __init__(self, in_features: int, out_features: int, group, *, sequence_parallel: bool = False,
                 bias: bool = False, recipe: RecipeLike = None, name: Optional[str] = None, seed: Optional[int] = None,
                 dtype: torch.dtype = torch.float32):
        super().__init__(group, sequence_parallel, recipe, name, seed)
        self.in_features, self.out_features = in_features, out_features
        local = _split(in_features, self.tp_size, "in_features")
        self.weight = torch.nn.Parameter(torch.empty(out_features, local, dtype=dtype))
        self.bias = torch.nn.Parameter(torch.zeros(out_features, dtype=dtype)) if bias else None
        bound = 1.0 / math.sqrt(in_features)
        torch.nn.init.uniform_(self.weight, -bound, bound)

    @torch.no_grad()
    def load_full(self, weight: torch.Tensor, bias: Optional[torch.Tensor] = None) -> "RowParallelLinear":
        """Copies this rank's columns of a full [out, in] weight (and the whole bias)."""
        cols = self.weight.shape[1]
        self.weight.copy_(weight[:, self.tp_rank * cols:(self.tp_rank + 1) * cols])
        if bias is not None:
            self.bias.copy_(bias)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._tp.row_linear(x, self.weight, self.bias, self.state_for(self.active_recipe()))

    def replicated_parameters(self) -> list:
        """Parameters whose gradient needs all_reduce_replicated_grads (the bias under SP)."""
        return [self.bias] if self.sequence_parallel and self.bias is not None else []

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features} (local {self.weight.shape[1]}), out_features={self.out_features}, "
                f"sequence_parallel={self.sequence_parallel}, recipe={self.active_recipe().name}")


class VocabParallelEmbedding(torch.nn.Module):
    """Embedding with the vocabulary rows sharded; output full (all-reduced) or this rank's tokens under SP."""

    def __init__(self, num_embeddings: int, embedding_dim: int, group, *, sequence_parallel: bool = False,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.group = group
        self._tp = tensor_parallel(group, sequence_parallel)
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        local = _split(num_embeddings, self._tp.size, "num_embeddings")
        self.weight = torch.nn.Parameter(torch.empty(local, embedding_dim, dtype=dtype))
        torch.nn.init.normal_(self.weight)

    @torch.no_grad()
    def load_full(self, weight: torch.Tensor) -> "VocabParallelEmbedding":
        rows = self.weight.shape[0]
        self.weight.copy_(weight[self._tp.rank * rows:(self._tp.rank + 1) * rows])
        return self

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._tp.embedding(tokens, self.weight)


def vocab_parallel_cross_entropy(logits_shard: torch.Tensor, targets: torch.Tensor, group,
                                 fp64_sums: bool = False) -> torch.Tensor:
    """Mean cross-entropy over targets != -100 from this rank's vocabulary slice of the logits. ``fp64_sums``:
    the softmax sums run in FP64, so the split rounds to the single-rank loss (a recipe's reproducible_sums)."""
    return tensor_parallel(group).cross_entropy(logits_shard, targets, fp64_sums)


def all_reduce_replicated_grads(params: Iterable[torch.Tensor], group) -> None:
    """Sums over the group the gradients of replicated parameters that saw only this rank's tokens (SP)."""
    tensor_parallel(group, sequence_parallel=True).all_reduce_replicated_grads(list(params))


# The regions: forward collective / backward conjugate (parallel-runtimes.md §1.1). Sequence dim = dim 0.
def copy_to_tensor_parallel(x: torch.Tensor, group) -> torch.Tensor:
    """Forward identity, backward all-reduce."""
    return _C.tp_copy_to_region(x, _comm(group))


def reduce_from_tensor_parallel(x: torch.Tensor, group) -> torch.Tensor:
    """Forward all-reduce, backward identity."""
    return _C.tp_reduce_from_region(x, _comm(group))


def scatter_to_sequence_parallel(x: torch.Tensor, group) -> torch.Tensor:
    """Forward: this rank's part of dim 0; backward: all-gather."""
    return _C.sp_scatter_to_region(x, _comm(group))


def gather_from_sequence_parallel(x: torch.Tensor, group, grad_is_partial: bool = True) -> torch.Tensor:
    """Forward: all-gather dim 0; backward: reduce-scatter (grad_is_partial) or this rank's part."""
    return _C.sp_gather_from_region(x, _comm(group), bool(grad_is_partial))


def reduce_scatter_to_sequence_parallel(x: torch.Tensor, group) -> torch.Tensor:
    """Forward: reduce-scatter dim 0; backward: all-gather."""
    return _C.sp_reduce_scatter_to_region(x, _comm(group))


def communicated_bytes() -> int:
    """Bytes this process handed to tensor/sequence-parallel collectives since the last reset."""
    return _C.tp_communicated_bytes()


def reset_communicated_bytes() -> None:
    _C.tp_reset_communicated_bytes()
