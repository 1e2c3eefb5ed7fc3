#pragma once
// nibble::core::model::ContextParallel (core/model/context_parallel_interface.h) over the cp group of a Mesh: the GPT
// model's causal attention runs as ring attention or Ulysses (context_parallel_attention.h), on this rank's two
// sequence chunks.
#include <string>

#include "core/model/context_parallel_interface.h"
#include "parallel/communicator.h"

namespace nibble::parallel::nn {

enum class ContextParallelMethod { kRing, kUlysses };
// "ring" | "ulysses"; throws InvalidArgument listing both.
ContextParallelMethod parse_context_parallel_method(const std::string& name);

class GroupContextParallel final : public core::model::ContextParallel {
 public:
  // `group` (normally mesh.cp()) must outlive this object and every autograd graph built with it.
  GroupContextParallel(Communicator& group, ContextParallelMethod method) : comm_(group), method_(method) {}
  int rank() const override { return comm_.rank(); }
  int size() const override { return comm_.size(); }
  torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) override;

 private:
  Communicator& comm_;
  ContextParallelMethod method_;
};

}  // namespace nibble::parallel::nn
