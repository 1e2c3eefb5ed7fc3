#pragma once
// A tensor-parallel shard of a normally distributed parameter, without the full tensor. The GPT's parameters
// are layout independent (docs/TRAINING.md): each is the full tensor torch's CPU generator (mt19937, seeded by
// layer_seed) draws with at::normal, sliced for this tp rank. at::normal fills a float tensor of N >= 16
// elements with N uniforms, turns each block of 16 into normals (Box-Muller) and, when N is not a multiple of 16,
// redraws 16 uniforms for the last 16 elements. Every element therefore depends only on its block's place in
// the generator's stream, so the same values come out of at::normal over the stream in 16-aligned chunks:
// chunks that hold some of this shard are drawn and copied from, the others are skipped by discarding their
// draws. Memory is the shard plus one chunk; time is still one pass over the full tensor's stream (mt19937 has no
// cheap jump ahead), which is what drawing the full tensor cost too.
#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace nibble::core::model {

// Bit for bit at::normal(0, std, full_shape, <CPU generator seeded with seed>, float32)
//              .narrow(shard_dim, index * part, part), part = full_shape[shard_dim] / parts,
// as a new contiguous tensor. shard_dim < 0 or parts == 1: the whole tensor. Throws InvalidArgument when
// parts does not divide the dim or index is outside [0, parts).
torch::Tensor sharded_normal(uint64_t seed, double std, const std::vector<int64_t>& full_shape, int shard_dim,
                             int64_t parts, int64_t index);

}  // namespace nibble::core::model
