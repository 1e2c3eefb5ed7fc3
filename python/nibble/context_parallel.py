"""Context parallel causal self-attention over a group of ranks (ring attention and DeepSpeed-Ulysses).

Layout [batch, heads, seq, head_dim] (torch SDPA's). The sequence of length S is split into 2*cp chunks and cp
rank r holds chunks r and 2*cp-1-r (load balanced: every rank does the same causal work); both methods use the
same split, so data loading does not depend on the method. S must be a multiple of 2*cp: ``split`` rejects
other lengths with a ValueError naming the nearest valid ones (nibble does not pad).

    rt = nibble.parallel.init(); mesh = nibble.parallel.Mesh(cp=4)
    q, k, v = (split(t, mesh.cp) for t in (q_full, k_full, v_full))       # [B, H, S/cp, D] each
    out = ring_attention(q, k, v, mesh.cp)      # or ulysses_attention (heads and kv heads divisible by cp)
    full = merge(out, mesh.cp)                  # all-gather + reorder, e.g. for checks

Both are autograd functions: ``out.backward(...)`` communicates over the same group, which must stay alive until
then. GQA: k and v may have fewer heads than q (query head h uses kv head h // (H // Hkv)).
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from . import _C

__all__ = ["ring_attention", "ulysses_attention", "split", "merge", "split_for_rank", "merge_gathered"]


def _comm(group):
    # A nibble.parallel.Group, or the C++ communicator itself.
    return group._comm if hasattr(group, "_comm") else group


def ring_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group, scale: Optional[float] = None):
    """Causal attention of this rank's queries over the whole sequence: K/V blocks go around the ring (the next
    exchange overlaps the current block), partial outputs merge by log-sum-exp; backward sends dK/dV around."""
    return _C.cp_ring_attention(q, k, v, _comm(group), scale)


def ulysses_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group, scale: Optional[float] = None):
    """All-to-all to head-sharded full sequences, causal SDPA, all-to-all back. Heads and kv heads must divide
    by the group size."""
    return _C.cp_ulysses_attention(q, k, v, _comm(group), scale)


def split_for_rank(x: torch.Tensor, cp: int, rank: int, dim: int = 2) -> torch.Tensor:
    """Rank `rank`'s part of the full sequence along `dim` (chunks rank and 2*cp-1-rank), no communication."""
    return _C.cp_split(x, dim, cp, rank)


def split(x: torch.Tensor, group, dim: int = 2) -> torch.Tensor:
    """This rank's part of a full sequence that every rank holds (e.g. the batch the data loader read)."""
    return split_for_rank(x, group.size, group.rank, dim)


def merge_gathered(x: torch.Tensor, cp: int, dim: int = 2) -> torch.Tensor:
    """Every rank's part concatenated in rank order along `dim` -> the sequence in natural order."""
    return _C.cp_merge(x, dim, cp)


def merge(x: torch.Tensor, group, dim: int = 2) -> torch.Tensor:
    """All-gathers every rank's part over the group and returns the full sequence in natural order."""
    moved = x.movedim(dim, 0).contiguous()
    gathered = group.all_gather(moved)
    return merge_gathered(gathered, group.size, 0).movedim(0, dim)
