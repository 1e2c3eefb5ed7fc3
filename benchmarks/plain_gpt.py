"""A plain-PyTorch GPT of nibble's architecture (core/model/gpt.h): Llama style -- RMSNorm, RoPE (rotate-half),
fused QKV, SwiGLU, untied LM head, causal SDPA -- the baseline a user would otherwise train, for the
benchmarks' ratios. Written here from the architecture, not from nibble's code: it shares no kernels."""
from __future__ import annotations

import torch
import torch.nn.functional as F


class Block(torch.nn.Module):
    def __init__(self, hidden: int, heads: int, ffn: int):
        super().__init__()
        self.heads = heads
        self.attn_norm = torch.nn.RMSNorm(hidden, eps=1e-5)
        self.qkv = torch.nn.Linear(hidden, 3 * hidden, bias=False)
        self.out = torch.nn.Linear(hidden, hidden, bias=False)
        self.mlp_norm = torch.nn.RMSNorm(hidden, eps=1e-5)
        self.gate = torch.nn.Linear(hidden, ffn, bias=False)
        self.up = torch.nn.Linear(hidden, ffn, bias=False)
        self.down = torch.nn.Linear(ffn, hidden, bias=False)

    def forward(self, x, cos, sin):
        b, s, h = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(b, s, self.heads, 3, h // self.heads).permute(3, 0, 2, 1, 4)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, s, h)
        x = x + self.out(a)
        m = self.mlp_norm(x)
        return x + self.down(F.silu(self.gate(m)) * self.up(m))


def rotate(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin


class PlainGpt(torch.nn.Module):
    def __init__(self, vocab: int, hidden: int, layers: int, heads: int, ffn: int, seq_len: int):
        super().__init__()
        self.embedding = torch.nn.Embedding(vocab, hidden)
        self.blocks = torch.nn.ModuleList(Block(hidden, heads, ffn) for _ in range(layers))
        self.final_norm = torch.nn.RMSNorm(hidden, eps=1e-5)
        self.lm_head = torch.nn.Linear(hidden, vocab, bias=False)
        hd = hidden // heads
        inv = 10000.0 ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
        angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv)
        angles = torch.cat([angles, angles], -1)
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, tokens, targets):
        x = self.embedding(tokens)
        s = tokens.shape[1]
        cos, sin = self.cos[:s].to(x.dtype), self.sin[:s].to(x.dtype)
        for block in self.blocks:
            x = block(x, cos, sin)
        logits = self.lm_head(self.final_norm(x))
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
