#pragma once
// Rotary position embedding (RoFormer; the "rotate half" pairing of GPT-NeoX and Llama in HF form): the
// channel pairs (i, i + d/2) of each head are rotated by position * theta^(-2i/d).
#include <torch/torch.h>

namespace nibble::core::model {

// cos and sin tables [seq_len, head_dim] (each half repeated), float32.
std::pair<torch::Tensor, torch::Tensor> rope_tables(int64_t seq_len, int64_t head_dim, double theta);

// x: [batch, heads, seq, head_dim]; tables from rope_tables(seq, head_dim, theta). Differentiable. Float32 on the
// CPU runs core/cpu/rope_cpu.h's single passes (x may be a strided view with unit stride along head_dim), which
// give the reference's values; anything else runs the reference.
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);
// The torch expression x * cos + cat(-x2, x1) * sin, autograd through plain ops (the fused pass's oracle).
torch::Tensor apply_rope_reference(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

}  // namespace nibble::core::model
