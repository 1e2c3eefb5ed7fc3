"""The one mapping between nibble's GPT parameters (core/model/gpt.h) and a Hugging Face LlamaForCausalLM's.

nibble                          Hugging Face Llama
embedding.weight [V, H]         model.embed_tokens.weight
layers.i.attn_norm.weight       model.layers.i.input_layernorm.weight
layers.i.qkv.weight [3H, H]     model.layers.i.self_attn.{q,k,v}_proj.weight [H, H] each
layers.i.out.weight             model.layers.i.self_attn.o_proj.weight
layers.i.mlp_norm.weight        model.layers.i.post_attention_layernorm.weight
layers.i.{gate,up,down}.weight  model.layers.i.mlp.{gate,up,down}_proj.weight
final_norm.weight               model.norm.weight
lm_head.weight                  lm_head.weight (absent when tied: tie_embeddings / tie_word_embeddings)

qkv's rows go head by head, [q | k | v] of head_dim rows each (Megatron's interleave, so a tp shard along dim 0
holds whole heads); Hugging Face keeps q, k and v as separate matrices whose rows go head by head. Both rotate
the channel pairs (i, i + head_dim/2) of each head (core/model/rope.h: rotate_half, as HF's Llama), so the rows
need no RoPE permutation -- tests/python/test_hf_export.py checks it against transformers' own forward.
"""
from __future__ import annotations

import re

import torch

# tp split dim of each nibble parameter (gpt.h "Full layouts"): 0 = rows (vocabulary, heads, ffn), 1 = columns,
# -1 = replicated. Used for the parameters a manifest does not list (its params are rank 0's only).
_SHARD_DIMS = [
    (re.compile(r"embedding\.weight|lm_head\.weight"), 0),
    (re.compile(r"layers\.\d+\.(qkv|gate|up)\.weight"), 0),
    (re.compile(r"layers\.\d+\.(out|down)\.weight"), 1),
    (re.compile(r"(layers\.\d+\.(attn|mlp)_norm|final_norm)\.weight"), -1),
]

_LAYER_NAMES = {  # nibble name in layer i -> HF name in layer i (qkv is split separately)
    "attn_norm": "input_layernorm",
    "out": "self_attn.o_proj",
    "mlp_norm": "post_attention_layernorm",
    "gate": "mlp.gate_proj",
    "up": "mlp.up_proj",
    "down": "mlp.down_proj",
}


def shard_dim(name: str) -> int:
    for pattern, dim in _SHARD_DIMS:
        if pattern.fullmatch(name):
            return dim
    raise ValueError(f"'{name}' is not a parameter of nibble's GPT (core/model/gpt.h)")


def split_qkv(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[3H, H] head-by-head [q|k|v] rows -> q, k, v [H, H] with rows head by head."""
    three_h, hidden = qkv.shape
    head_dim = three_h // (3 * heads)
    per_head = qkv.reshape(heads, 3, head_dim, hidden)
    return tuple(per_head[:, j].reshape(heads * head_dim, hidden).contiguous() for j in range(3))


def join_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """The inverse of split_qkv."""
    rows, hidden = q.shape
    head_dim = rows // heads
    per_head = torch.stack([t.reshape(heads, head_dim, hidden) for t in (q, k, v)], dim=1)
    return per_head.reshape(3 * rows, hidden).contiguous()


def nibble_to_hf(params: dict[str, torch.Tensor], layers: int, heads: int, tied: bool) -> dict[str, torch.Tensor]:
    """Full nibble tensors by name -> Hugging Face Llama state dict (lm_head.weight omitted when tied)."""
    out = {"model.embed_tokens.weight": params["embedding.weight"], "model.norm.weight": params["final_norm.weight"]}
    if not tied:
        out["lm_head.weight"] = params["lm_head.weight"]
    for i in range(layers):
        hf = f"model.layers.{i}."
        q, k, v = split_qkv(params[f"layers.{i}.qkv.weight"], heads)
        out[hf + "self_attn.q_proj.weight"], out[hf + "self_attn.k_proj.weight"], out[hf + "self_attn.v_proj.weight"] = q, k, v
        for ours, theirs in _LAYER_NAMES.items():
            out[hf + theirs + ".weight"] = params[f"layers.{i}.{ours}.weight"]
    return out


def hf_names(layers: int, tied: bool) -> list[str]:
    """Every tensor a Hugging Face Llama of this shape holds (what import requires, nothing more)."""
    names = ["model.embed_tokens.weight", "model.norm.weight"] + ([] if tied else ["lm_head.weight"])
    for i in range(layers):
        hf = f"model.layers.{i}."
        names += [hf + f"self_attn.{p}_proj.weight" for p in "qkv"]
        names += [hf + theirs + ".weight" for theirs in _LAYER_NAMES.values()]
    return names


def hf_to_nibble(state: dict[str, torch.Tensor], layers: int, heads: int, tied: bool) -> dict[str, torch.Tensor]:
    """Hugging Face Llama state dict -> full nibble tensors by name, in nibble's creation order."""
    out = {"embedding.weight": state["model.embed_tokens.weight"]}
    for i in range(layers):
        hf = f"model.layers.{i}."
        out[f"layers.{i}.attn_norm.weight"] = state[hf + "input_layernorm.weight"]
        out[f"layers.{i}.qkv.weight"] = join_qkv(*(state[hf + f"self_attn.{p}_proj.weight"] for p in "qkv"), heads)
        for ours in ("out", "mlp_norm", "gate", "up", "down"):
            out[f"layers.{i}.{ours}.weight"] = state[hf + _LAYER_NAMES[ours] + ".weight"]
    out["final_norm.weight"] = state["model.norm.weight"]
    if not tied:
        out["lm_head.weight"] = state["lm_head.weight"]
    return out
