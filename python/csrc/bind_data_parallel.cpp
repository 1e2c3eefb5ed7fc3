// nibble.data_parallel's C++ half: the optimizer over torch parameters (optim/torch/optimizer.h), gradient
// buckets, the ZeRO-1 optimizer and its checkpoint resharding, global clipping and the delayed-scaling amax
// reduction (parallel/nn/). Groups arrive as the _C.Communicator objects of nibble.parallel (owned by the
// runtime or a Mesh, which the Python wrappers keep alive). The GIL is released while a call communicates.
#include <map>
#include <string>
#include <vector>

#include "optim/torch/optimizer.h"
#include "parallel/nn/amax_reduction.h"
#include "parallel/nn/global_clip.h"
#include "parallel/nn/grad_buckets.h"
#include "parallel/nn/zero_optimizer.h"
#include "precision/delayed_scaling.h"
#include "precision/error.h"
#include "python/csrc/bindings.h"

namespace nibble::python {
namespace {

namespace py = pybind11;
namespace par = nibble::parallel;
using NamedParams = std::vector<std::pair<std::string, torch::Tensor>>;
using StateDict = std::map<std::string, torch::Tensor>;

optim::OptimizerConfig config_of(const py::dict& d) {
  optim::OptimizerConfig c;
  for (const auto& [k, v] : d) {
    const std::string key = py::str(k);
    if (key == "kind") c.kind = v.cast<std::string>();
    else if (key == "state") c.state = v.cast<std::string>();
    else if (key == "master") c.master = v.cast<std::string>();
    else if (key == "lr") c.lr = v.cast<double>();
    else if (key == "beta1") c.beta1 = v.cast<double>();
    else if (key == "beta2") c.beta2 = v.cast<double>();
    else if (key == "eps") c.eps = v.cast<double>();
    else if (key == "weight_decay") c.weight_decay = v.cast<double>();
    else if (key == "momentum") c.momentum = v.cast<double>();
    else if (key == "stochastic_rounding") c.stochastic_rounding = v.cast<bool>();
    else if (key == "seed") c.seed = v.cast<uint64_t>();
    else
      throw InvalidArgument("nibble optimizer config: unknown key '" + key +
                            "'; valid: kind, state, master, lr, beta1, beta2, eps, weight_decay, momentum, "
                            "stochastic_rounding, seed");
  }
  c.validate();
  return c;
}

py::tuple step_result(const optim::StepResult& r) { return py::make_tuple(r.applied, r.nonfinite_param); }

py::dict layout_dict(const par::FlatLayout& L) {
  py::dict d;
  d["offset"] = L.offset;
  d["numel"] = L.numel;
  d["order"] = L.order;
  d["total"] = L.total;
  d["ranks"] = L.ranks;
  d["shard_size"] = L.shard_size();
  return d;
}

par::ParamShapes shapes_of(const std::vector<std::pair<std::string, std::vector<int64_t>>>& p) { return p; }

}  // namespace

void bind_data_parallel(py::module_& m) {
  py::class_<optim::Optimizer>(m, "TorchOptimizer")
      .def(py::init([](const NamedParams& params, const py::dict& config) {
             return std::make_unique<optim::Optimizer>(params, config_of(config));
           }),
           py::arg("named_params"), py::arg("config"))
      .def("grad_norm_squared", &optim::Optimizer::grad_norm_squared)
      .def("find_nonfinite_grad", &optim::Optimizer::find_nonfinite_grad)
      .def(
          "step",
          [](optim::Optimizer& o, double lr_factor, float grad_scale) {
            optim::StepResult r;
            {
              py::gil_scoped_release no_gil;
              r = o.step(lr_factor, grad_scale);
            }
            return step_result(r);
          },
          py::arg("lr_factor") = 1.0, py::arg("grad_scale") = 1.0f)
      .def("zero_grad", &optim::Optimizer::zero_grad)
      .def("state_dict", &optim::Optimizer::state_dict)
      .def("load_state_dict", &optim::Optimizer::load_state_dict, py::arg("state"))
      .def("state_bytes", &optim::Optimizer::state_bytes);

  py::class_<par::GradBuckets>(m, "GradBuckets")
      .def(py::init([](const NamedParams& params, par::Communicator& comm, double bucket_mb, const std::string& mode) {
             if (mode != "all_reduce" && mode != "reduce_scatter")
               throw InvalidArgument("GradBuckets: mode '" + mode + "' is invalid; valid: all_reduce, reduce_scatter");
             return std::make_unique<par::GradBuckets>(
                 params, comm,
                 par::GradBucketOptions{bucket_mb, mode == "all_reduce" ? par::BucketMode::kAllReduce
                                                                        : par::BucketMode::kReduceScatter});
           }),
           py::arg("named_params"), py::arg("comm"), py::arg("bucket_mb"), py::arg("mode"), py::keep_alive<1, 3>())
      .def("mark_ready", &par::GradBuckets::mark_ready, py::arg("index"))
      .def("finish", &par::GradBuckets::finish, py::call_guard<py::gil_scoped_release>())
      .def("reset", &par::GradBuckets::reset)
      .def_property_readonly("num_buckets", &par::GradBuckets::num_buckets)
      .def("bucket_of", &par::GradBuckets::bucket_of, py::arg("index"))
      .def_property_readonly("flat_grad", &par::GradBuckets::flat_grad)
      .def_property_readonly("shard_grad", &par::GradBuckets::shard_grad)
      .def_property_readonly("layout", [](const par::GradBuckets& b) { return layout_dict(b.layout()); });

  py::class_<par::ZeroOptimizer>(m, "ZeroOptimizer")
      .def(py::init([](const NamedParams& params, const py::dict& config, par::Communicator& comm, double bucket_mb,
                       bool fp8_all_gather) {
             return std::make_unique<par::ZeroOptimizer>(params, config_of(config), comm,
                                                         par::ZeroOptions{bucket_mb, fp8_all_gather});
           }),
           py::arg("named_params"), py::arg("config"), py::arg("comm"), py::arg("bucket_mb"),
           py::arg("fp8_all_gather"), py::keep_alive<1, 4>())
      .def("mark_ready", [](par::ZeroOptimizer& z, size_t i) { z.buckets().mark_ready(i); }, py::arg("index"))
      .def("finish_gradients", &par::ZeroOptimizer::finish_gradients, py::call_guard<py::gil_scoped_release>())
      .def("shard_grad_norm_squared", &par::ZeroOptimizer::shard_grad_norm_squared,
           py::call_guard<py::gil_scoped_release>())
      .def(
          "step",
          [](par::ZeroOptimizer& z, double lr_factor, float grad_scale) {
            optim::StepResult r;
            {
              py::gil_scoped_release no_gil;
              r = z.step(lr_factor, grad_scale);
            }
            return step_result(r);
          },
          py::arg("lr_factor") = 1.0, py::arg("grad_scale") = 1.0f)
      .def("sync_from_model", &par::ZeroOptimizer::sync_from_model)
      .def("state_dict", &par::ZeroOptimizer::state_dict)
      .def("load_state_dict", &par::ZeroOptimizer::load_state_dict, py::arg("state"))
      .def("state_bytes", &par::ZeroOptimizer::state_bytes)
      .def_property_readonly("layout", [](const par::ZeroOptimizer& z) { return layout_dict(z.layout()); });

  m.def(
      "zero_gather_state",
      [](const std::vector<StateDict>& shards, const std::vector<std::pair<std::string, std::vector<int64_t>>>& params,
         const py::dict& config) { return par::gather_zero_state(shards, shapes_of(params), config_of(config)); },
      py::arg("shards"), py::arg("params"), py::arg("config"));
  m.def(
      "zero_split_state",
      [](const StateDict& full, const std::vector<std::pair<std::string, std::vector<int64_t>>>& params,
         const py::dict& config, int ranks, int rank) {
        return par::split_zero_state(full, shapes_of(params), config_of(config), ranks, rank);
      },
      py::arg("full"), py::arg("params"), py::arg("config"), py::arg("ranks"), py::arg("rank"));
  m.def(
      "global_grad_norm_squared",
      [](double local, const std::vector<par::Communicator*>& groups) {
        py::gil_scoped_release no_gil;
        return par::global_grad_norm_squared(local, groups);
      },
      py::arg("local_sum_squares"), py::arg("sum_over"));
  m.def("clip_coefficient", &par::clip_coefficient, py::arg("norm"), py::arg("max_norm"));
  m.def(
      "reduce_pending_amaxes",
      [](const std::vector<precision::DelayedScaling*>& states, par::Communicator& group) {
        py::gil_scoped_release no_gil;
        par::reduce_pending_amaxes(states, group);
      },
      py::arg("states"), py::arg("group"));
}

}  // namespace nibble::python
