#include "core/model/recompute.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>

namespace nibble::core::model {
namespace {

using torch::autograd::variable_list;

struct RecomputeBackward : public torch::autograd::Node {
  std::string label;
  RecomputedFn fn;
  std::vector<torch::Tensor> activations;  // the inputs' values (detached: the graph before them is not held)
  std::vector<bool> activation_grad;       // which of them gradients flow to
  std::vector<torch::Tensor> params;
  std::vector<std::shared_ptr<LinearState>> states;
  std::vector<uint64_t> counters_at_start;

  std::string name() const override { return "nibble::RecomputeBackward(" + label + ")"; }
  void release_variables() override {
    activations.clear();
    fn = nullptr;
  }

  variable_list apply(variable_list&& grads) override {
    if (!fn) throw std::runtime_error(name() + ": backward ran twice (its inputs were released)");
    variable_list out(activations.size() + params.size());
    if (!grads[0].defined()) return out;
    std::vector<uint64_t> reached;
    for (size_t i = 0; i < states.size(); ++i) {
      reached.push_back(states[i]->sr_counter);
      states[i]->sr_counter = counters_at_start[i];
    }
    std::vector<torch::Tensor> inputs, wrt;
    std::vector<size_t> slot;  // output slot of each entry of wrt
    for (size_t i = 0; i < activations.size(); ++i) {
      inputs.push_back(activations[i].detach().requires_grad_(activation_grad[i]));
      if (activation_grad[i]) wrt.push_back(inputs.back()), slot.push_back(i);
    }
    for (size_t i = 0; i < params.size(); ++i)
      if (params[i].requires_grad()) wrt.push_back(params[i]), slot.push_back(activations.size() + i);
    {
      torch::AutoGradMode grad_on(true);
      const torch::Tensor y = fn(inputs);
      // (grad() returns the gradients without accumulating them: this node hands them to its own edges, the
      // parameters' accumulators among them, as any node does.)
      const variable_list g = torch::autograd::grad({y}, wrt, {grads[0]}, /*retain_graph=*/false,
                                                    /*create_graph=*/false, /*allow_unused=*/true);
      for (size_t j = 0; j < g.size(); ++j) out[slot[j]] = g[j];
    }
    for (size_t i = 0; i < states.size(); ++i) states[i]->sr_counter = reached[i];
    release_variables();
    return out;
  }
};

}  // namespace

torch::Tensor recomputed(const std::string& name, const RecomputedFn& fn, const std::vector<torch::Tensor>& activations,
                         const std::vector<torch::Tensor>& params, std::vector<std::shared_ptr<LinearState>> counters) {
  bool any = false;
  for (const auto* list : {&activations, &params})
    for (const torch::Tensor& t : *list) any = any || t.requires_grad();
  if (!torch::GradMode::is_enabled() || !any) return fn(activations);
  auto node = c10::make_intrusive<RecomputeBackward>();
  node->label = name;
  node->fn = fn;
  for (const torch::Tensor& a : activations) {
    node->activations.push_back(a.detach());
    node->activation_grad.push_back(a.requires_grad());
  }
  node->params = params;
  node->states = std::move(counters);
  for (const auto& s : node->states) node->counters_at_start.push_back(s->sr_counter);
  torch::Tensor y;
  {
    torch::NoGradGuard no_grad;
    y = fn(activations);
  }
  std::vector<torch::Tensor> edges = activations;
  edges.insert(edges.end(), params.begin(), params.end());
  node->set_next_edges(torch::autograd::collect_next_edges(at::ArrayRef<torch::Tensor>(edges)));
  torch::autograd::set_history(y, node);
  return y;
}

}  // namespace nibble::core::model
