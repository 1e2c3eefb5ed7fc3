// nibble.models' C++ half: nibble-train's own pieces, so a Python loop trains the model nibble-train trains, on
// the data it reads, and reduces and clips as it does:
//   TrainConfig  -- launch/train_config.h: the TOML keys, their types and validate(); a Python dict arrives as
//                   TOML text (python/nibble/models.py), so it is checked as a file is;
//   GptModel     -- core/model/gpt.h built by launch/model_layout.h (one process, or over a Mesh's tp group),
//                   with the trainer's gradient steps of launch/grad_sync.h over that Mesh;
//   TrainBatches -- core/data/batch_sampler.h cut as the trainer cuts it (launch/micro_batches.h).
// The GIL is released while the model computes or communicates.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/data/batch_sampler.h"
#include "core/data/token_file.h"
#include "core/model/gpt.h"
#include "launch/grad_sync.h"
#include "launch/micro_batches.h"
#include "launch/model_layout.h"
#include "launch/train_config.h"
#include "optim/torch/optimizer.h"
#include "parallel/mesh.h"
#include "parallel/runtime.h"
#include "precision/error.h"
#include "python/csrc/bindings.h"

namespace nibble::python {
namespace {

namespace py = pybind11;
using launch::TrainConfig;

// The layout a Mesh gives the config (the mesh decides: its groups are what the model talks over).
TrainConfig on_mesh(TrainConfig c, const parallel::Mesh* mesh) {
  if (!mesh) return c;
  const parallel::MeshShape& s = mesh->shape();
  c.tp = s.tp;
  c.cp = s.cp;
  c.dp = s.dp;
  c.pp = s.pp;
  return c;
}

// The model and the mesh it was built over (null: one process; Python keeps the Mesh alive).
struct GptModel {
  TrainConfig config;
  const parallel::Mesh* mesh = nullptr;
  std::unique_ptr<core::model::Gpt> model;

  GptModel(const TrainConfig& c, const parallel::Mesh* m) : config(on_mesh(c, m)), mesh(m) {
    if (mesh && (config.pp > 1 || config.cp > 1))
      throw InvalidArgument("nibble.models.GPT runs the whole model and whole sequences on every rank: the mesh has "
                            "pp = " + std::to_string(config.pp) + ", cp = " + std::to_string(config.cp) +
                            "; pipeline and context parallel training is nibble-train's (use a mesh with pp = cp = 1)");
    // The adaptive policy lives in nibble-train's step loop (launch/precision_policy.h); here it would do nothing.
    if (config.model.precision_policy != "fixed")
      throw InvalidArgument("nibble.models.GPT: model.precision_policy = \"" + config.model.precision_policy +
                            "\" is nibble-train's (it raises Linears' recipes between its steps); this model keeps "
                            "its configured recipes: use \"fixed\"");
    model = mesh ? launch::build_model(config, *mesh) : launch::build_single_rank_model(config);
  }

  const parallel::Mesh& require_mesh(const char* what) const {
    if (!mesh)
      throw InvalidArgument(std::string("nibble.models.GPT.") + what +
                            " reduces over the mesh's groups: build the model with mesh=nibble.parallel.Mesh(...)");
    return *mesh;
  }
};

// One step's micro-batches of this rank, as the trainer feeds them.
struct TrainBatches {
  TrainConfig config;
  const parallel::Mesh* mesh;
  std::unique_ptr<core::data::TokenFile> file;
  std::unique_ptr<core::data::BatchSampler> sampler;

  TrainBatches(const TrainConfig& c, const parallel::Mesh& m) : config(c), mesh(&m) {
    const parallel::MeshShape& s = m.shape();
    if (s.tp != c.tp || s.cp != c.cp || s.dp != c.dp || s.pp != c.pp)
      throw InvalidArgument("nibble.models.TrainBatches: the mesh (tp = " + std::to_string(s.tp) + ", cp = " +
                            std::to_string(s.cp) + ", dp = " + std::to_string(s.dp) + ", pp = " + std::to_string(s.pp) +
                            ") is not the config's layout (parallel.tp = " + std::to_string(c.tp) + ", cp = " +
                            std::to_string(c.cp) + ", dp = " + std::to_string(c.dp) + ", pp = " +
                            std::to_string(c.pp) + ")");
    file = std::make_unique<core::data::TokenFile>(c.train_path);
    sampler = std::make_unique<core::data::BatchSampler>(*file, c.model.seq_len, c.data_seed);
  }
};

py::dict param_info(const core::model::ParamInfo& p) {
  py::dict d;
  d["name"] = p.name;
  d["shard_dim"] = p.shard_dim;
  d["full_shape"] = p.full_shape;
  d["tied_copy"] = p.tied_copy;
  return d;
}

}  // namespace

void bind_models(py::module_& m) {
  py::class_<TrainConfig>(m, "TrainConfig")
      .def_static(
          "load",
          [](const std::string& path, const std::vector<std::pair<std::string, std::string>>& overrides) {
            return launch::load_config(path, overrides);
          },
          py::arg("path"), py::arg("overrides"))
      .def_static("from_toml", &launch::load_config_text, py::arg("text"), py::arg("where"))
      .def("validate", [](const TrainConfig& c, int64_t world_size) { launch::validate(c, world_size); },
           py::arg("world_size"))
      .def("to_dict", &TrainConfig::to_map)
      // The [optim] keys as the trainer's optimizer takes them (launch::optimizer_config), by field.
      .def("optimizer_config",
           [](const TrainConfig& c) {
             const optim::OptimizerConfig o = launch::optimizer_config(c);
             py::dict d;
             d["kind"] = o.kind;
             d["state"] = o.state;
             d["master"] = o.master;
             d["lr"] = o.lr;
             d["beta1"] = o.beta1;
             d["beta2"] = o.beta2;
             d["eps"] = o.eps;
             d["weight_decay"] = o.weight_decay;
             d["momentum"] = o.momentum;
             d["stochastic_rounding"] = o.stochastic_rounding;
             d["seed"] = o.seed;
             return d;
           })
      .def_property_readonly("model_seed", [](const TrainConfig& c) { return c.model.seed; })
      .def_property_readonly("seq_len", [](const TrainConfig& c) { return c.model.seq_len; })
      .def_property_readonly("vocab", [](const TrainConfig& c) { return c.model.vocab; })
      .def_readonly("train_path", &TrainConfig::train_path)
      .def_readonly("data_seed", &TrainConfig::data_seed)
      .def_readonly("steps", &TrainConfig::steps)
      .def_readonly("global_batch", &TrainConfig::global_batch)
      .def_readonly("micro_batch", &TrainConfig::micro_batch)
      .def_readonly("threads", &TrainConfig::threads)
      .def_readonly("out_dir", &TrainConfig::out_dir)
      .def_readonly("schedule", &TrainConfig::schedule)
      .def_readonly("lr", &TrainConfig::lr)
      .def_readonly("min_lr_ratio", &TrainConfig::min_lr_ratio)
      .def_readonly("warmup", &TrainConfig::warmup)
      .def_readonly("grad_clip", &TrainConfig::grad_clip)
      .def_readonly("zero", &TrainConfig::zero)
      .def_readonly("tp", &TrainConfig::tp)
      .def_readonly("cp", &TrainConfig::cp)
      .def_readonly("dp", &TrainConfig::dp)
      .def_readonly("pp", &TrainConfig::pp)
      .def_readonly("sequence_parallel", &TrainConfig::sequence_parallel)
      .def_readonly("reproducible_sums", &TrainConfig::reproducible_sums)
      .def_readonly("timeout_s", &TrainConfig::timeout_s);

  // nibble-train's torch threads per rank: train.threads, or 0 = the cores this rank has (parallel/runtime.h).
  m.def(
      "train_threads",
      [](const TrainConfig& c) { return c.threads > 0 ? static_cast<int>(c.threads) : parallel::cores_per_rank(); },
      py::arg("config"));

  py::class_<GptModel>(m, "GptModel")
      .def(py::init([](const TrainConfig& c, const parallel::Mesh* mesh) { return std::make_unique<GptModel>(c, mesh); }),
           py::arg("config"), py::arg("mesh"), py::keep_alive<1, 3>())
      .def("loss",
           [](GptModel& g, const torch::Tensor& tokens, const torch::Tensor& targets) {
             return g.model->loss(tokens, targets);
           },
           py::arg("tokens"), py::arg("targets"), py::call_guard<py::gil_scoped_release>())
      .def("logits", [](GptModel& g, const torch::Tensor& tokens) { return g.model->logits(tokens); },
           py::arg("tokens"), py::call_guard<py::gil_scoped_release>())
      .def("named_parameters", [](const GptModel& g) { return g.model->named_parameters(); })
      .def("param_info",
           [](const GptModel& g) {
             py::list out;
             for (const auto& p : g.model->params()) out.append(param_info(p));
             return out;
           })
      .def("set_rounding_stream", [](GptModel& g, uint64_t stream, int chunk) { g.model->set_rounding_stream(stream, chunk); },
           py::arg("stream"), py::arg("chunk") = -1)
      .def("end_step", [](GptModel& g) { g.model->end_step(); })
      // Every Linear's state (weight cache, delayed scaling, quantization statistics: nibble.nn.quantization_stats).
      .def("linear_states", [](const GptModel& g) { return g.model->linear_states(); })
      .def("zero_grad", [](GptModel& g) { g.model->zero_grad(); })
      .def_property_readonly("config", [](const GptModel& g) { return g.config; })
      .def_property_readonly("tp_rank", [](const GptModel& g) { return g.model->tensor_parallel().rank(); })
      .def_property_readonly("tp_size", [](const GptModel& g) { return g.model->tensor_parallel().size(); })
      // The trainer's steps between backward and the optimizer (launch/trainer.cpp, launch/grad_sync.h).
      .def(
          "all_reduce_replicated_grads",
          [](GptModel& g) { g.model->tensor_parallel().all_reduce_replicated_grads(g.model->replicated_parameters()); },
          py::call_guard<py::gil_scoped_release>())
      .def(
          "average_gradients", [](GptModel& g) { launch::average_gradients(*g.model, g.require_mesh("average_gradients")); },
          py::call_guard<py::gil_scoped_release>())
      .def(
          "grad_norm",
          [](GptModel& g) {
            std::vector<torch::Tensor> grads;
            for (const auto& p : g.model->params()) grads.push_back(p.tensor.grad());
            return launch::global_grad_norm(*g.model, g.require_mesh("grad_norm"), grads);
          },
          py::call_guard<py::gil_scoped_release>())
      .def(
          "reduce_delayed_amaxes",
          [](GptModel& g) {
            if (g.mesh) launch::reduce_delayed_amaxes(*g.model, *g.mesh);
          },
          py::call_guard<py::gil_scoped_release>())
      .def(
          "mean_over_dp",
          [](GptModel& g, double value) { return launch::mean_over(g.require_mesh("mean_over_dp").dp_cp(), value); },
          py::arg("value"), py::call_guard<py::gil_scoped_release>());

  py::class_<TrainBatches>(m, "TrainBatches")
      .def(py::init([](const TrainConfig& c, const parallel::Mesh& mesh) { return std::make_unique<TrainBatches>(c, mesh); }),
           py::arg("config"), py::arg("mesh"), py::keep_alive<1, 3>())
      .def(
          "step",
          [](const TrainBatches& b, int64_t step) {
            if (step < 0) throw InvalidArgument("nibble.models.TrainBatches.step: step " + std::to_string(step) + " < 0");
            const launch::MicroBatches mb = launch::step_batches(b.config, *b.sampler, *b.mesh, step, torch::kCPU);
            py::list out;
            for (size_t i = 0; i < mb.tokens.size(); ++i) out.append(py::make_tuple(mb.tokens[i], mb.targets[i], mb.streams[i]));
            return out;
          },
          py::arg("step"));
}

}  // namespace nibble::python
