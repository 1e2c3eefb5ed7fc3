#include "launch/model_layout.h"

#include "core/model/single_rank_tensor_parallel.h"
#include "parallel/nn/context_parallel_attention.h"
#include "parallel/nn/group_context_parallel.h"
#include "parallel/nn/group_tensor_parallel.h"
#include "parallel/pipeline_schedule.h"
#include "precision/error.h"

namespace nibble::launch {

parallel::LayerAssignmentOptions layer_assignment(const TrainConfig& c) {
  parallel::LayerAssignmentOptions o;
  o.num_layers = static_cast<int>(c.model.layers);
  o.stages = static_cast<int>(c.pp);
  o.virtual_chunks = static_cast<int>(c.virtual_stages);
  for (int64_t n : c.pp_layer_counts()) o.layer_counts.push_back(static_cast<int>(n));
  o.embedding_counts_as_layer = c.pp_embedding_as_layer;
  o.lm_head_counts_as_layer = c.pp_head_as_layer;
  return o;
}

std::unique_ptr<core::model::Gpt> build_model(const TrainConfig& c, const parallel::Mesh& mesh) {
  std::shared_ptr<core::model::TensorParallel> tp;
  if (c.tp == 1 && !c.sequence_parallel)
    tp = std::make_shared<core::model::SingleRankTensorParallel>();
  else
    tp = std::make_shared<parallel::nn::GroupTensorParallel>(mesh.tp(), c.sequence_parallel);
  std::shared_ptr<core::model::ContextParallel> cp;
  if (c.cp > 1)
    cp = std::make_shared<parallel::nn::GroupContextParallel>(mesh.cp(),
                                                              parallel::nn::parse_context_parallel_method(c.cp_method));
  std::vector<core::model::GptChunk> chunks;
  for (const parallel::StageLayers& s : parallel::assign_layers(layer_assignment(c)))
    if (s.rank == mesh.coord().pp)
      chunks.push_back({s.first_layer, s.first_layer + s.num_layers, s.embedding, s.lm_head});
  return std::make_unique<core::model::Gpt>(model_config(c), tp, cp, std::move(chunks));
}

core::model::GptConfig model_config(const TrainConfig& c) {
  core::model::GptConfig model = c.model;
  model.reproducible_sums = c.reproducible_sums;
  return model;
}

std::unique_ptr<core::model::Gpt> build_single_rank_model(const TrainConfig& c) {
  if (c.tp * c.cp * c.dp * c.pp != 1 || c.sequence_parallel)
    throw InvalidArgument("a model without a mesh is the whole model on one rank; the config asks for parallel.tp = " +
                          std::to_string(c.tp) + ", cp = " + std::to_string(c.cp) + ", dp = " + std::to_string(c.dp) +
                          ", pp = " + std::to_string(c.pp) + ", sequence_parallel = " +
                          (c.sequence_parallel ? "true" : "false") + " (build it over a mesh of that shape)");
  return std::make_unique<core::model::Gpt>(model_config(c), std::make_shared<core::model::SingleRankTensorParallel>());
}

torch::Tensor context_parallel_part(const torch::Tensor& tokens, const parallel::Mesh& mesh) {
  if (mesh.shape().cp == 1) return tokens;
  return parallel::nn::context_parallel_split(tokens, 1, mesh.shape().cp, mesh.coord().cp);
}

int head_pp_rank(const parallel::Mesh& mesh) { return mesh.shape().pp - 1; }

torch::Tensor pipeline_forward(core::model::Gpt& model, const parallel::Mesh& mesh, const torch::Tensor& tokens) {
  torch::NoGradGuard no_grad;
  const int pp = mesh.shape().pp, me = mesh.coord().pp;
  const int64_t batch = tokens.size(0), seq = tokens.size(1);
  const int64_t stages = pp * static_cast<int64_t>(model.chunks().size());
  const int64_t rows = batch * seq / (model.tensor_parallel().sequence_parallel() ? model.tensor_parallel().size() : 1);
  torch::Tensor h;
  for (int64_t s = 0; s < stages; ++s) {
    const int owner = static_cast<int>(s % pp);
    if (owner != me) continue;
    const size_t chunk = static_cast<size_t>(s / pp);
    torch::Tensor input = tokens;
    if (s > 0) {
      if (pp > 1) {  // messages in host memory, as the training pipeline's (pipeline_runtime.h)
        input = torch::empty({rows, model.config().hidden}, torch::kFloat32);
        mesh.pp().recv<float>(std::span<float>(input.data_ptr<float>(), static_cast<size_t>(input.numel())),
                              static_cast<int>((s - 1) % pp));
        input = input.to(model.device());
      } else {
        input = h;
      }
    }
    h = model.forward_chunk(chunk, input, batch, seq).contiguous();
    if (s + 1 < stages && pp > 1) {
      const torch::Tensor message = h.to(torch::kCPU).contiguous();
      mesh.pp().send<const float>(
          std::span<const float>(message.data_ptr<float>(), static_cast<size_t>(message.numel())),
          static_cast<int>((s + 1) % pp));
    }
  }
  return me == head_pp_rank(mesh) ? h : torch::Tensor();
}

}  // namespace nibble::launch
