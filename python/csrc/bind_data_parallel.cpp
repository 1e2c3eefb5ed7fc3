// nibble.data_parallel's C++ half: gradient buckets, the ZeRO-1 optimizer and its checkpoint resharding, the
// global gradient norm and the delayed-scaling amax reduction (parallel/nn/). Optimizer configs arrive as
// _C.OptimizerConfig (bind_optim.cpp). Groups arrive as the _C.Communicator objects of nibble.parallel (owned by
// the runtime or a Mesh, which the Python wrappers keep alive). The GIL is released while a call communicates.
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

py::tuple step_result(const optim::StepResult& r) { return py::make_tuple(r.applied, r.nonfinite_param); }

py::dict layout_dict(const par::nn::FlatLayout& L) {
  py::dict d;
  d["offset"] = L.offset;
  d["numel"] = L.numel;
  d["order"] = L.order;
  d["total"] = L.total;
  d["ranks"] = L.ranks;
  d["shard_size"] = L.shard_size();
  return d;
}

par::nn::ParamShapes shapes_of(const std::vector<std::pair<std::string, std::vector<int64_t>>>& p) {
  return p;
}

}  // namespace

void bind_data_parallel(py::module_& m) {
  py::class_<par::nn::GradBuckets>(m, "GradBuckets")
      .def(py::init([](const NamedParams& params, par::Communicator& comm, double bucket_mb, const std::string& mode) {
             if (mode != "all_reduce" && mode != "reduce_scatter")
               throw InvalidArgument("GradBuckets: mode '" + mode + "' is invalid; valid: all_reduce, reduce_scatter");
             return std::make_unique<par::nn::GradBuckets>(
                 params, comm,
                 par::nn::GradBucketOptions{bucket_mb, mode == "all_reduce" ? par::nn::BucketMode::kAllReduce
                                                                            : par::nn::BucketMode::kReduceScatter});
           }),
           py::arg("named_params"), py::arg("comm"), py::arg("bucket_mb"), py::arg("mode"), py::keep_alive<1, 3>())
      .def("mark_ready", &par::nn::GradBuckets::mark_ready, py::arg("index"))
      .def("finish", &par::nn::GradBuckets::finish, py::call_guard<py::gil_scoped_release>())
      .def("reset", &par::nn::GradBuckets::reset)
      .def_property_readonly("num_buckets", &par::nn::GradBuckets::num_buckets)
      .def("bucket_of", &par::nn::GradBuckets::bucket_of, py::arg("index"))
      .def_property_readonly("flat_grad", &par::nn::GradBuckets::flat_grad)
      .def_property_readonly("shard_grad", &par::nn::GradBuckets::shard_grad)
      .def_property_readonly("layout", [](const par::nn::GradBuckets& b) { return layout_dict(b.layout()); });

  py::class_<par::nn::ZeroOptimizer>(m, "ZeroOptimizer")
      .def(py::init([](const NamedParams& params, const optim::OptimizerConfig& config, par::Communicator& comm,
                       double bucket_mb, bool fp8_all_gather) {
             return std::make_unique<par::nn::ZeroOptimizer>(params, config, comm,
                                                             par::nn::ZeroOptions{bucket_mb, fp8_all_gather});
           }),
           py::arg("named_params"), py::arg("config"), py::arg("comm"), py::arg("bucket_mb"), py::arg("fp8_all_gather"),
           py::keep_alive<1, 4>())
      .def(
          "mark_ready", [](par::nn::ZeroOptimizer& z, size_t i) { z.buckets().mark_ready(i); }, py::arg("index"))
      .def("finish_gradients", &par::nn::ZeroOptimizer::finish_gradients, py::call_guard<py::gil_scoped_release>())
      .def("shard_grads",
           [](par::nn::ZeroOptimizer& z) {
             std::vector<torch::Tensor> pieces;
             {
               py::gil_scoped_release no_gil;
               pieces = z.shard_grads();
             }
             std::vector<torch::Tensor> held;  // only this rank's pieces (Python has no undefined tensor)
             for (torch::Tensor& t : pieces)
               if (t.defined()) held.push_back(std::move(t));
             return held;
           })
      .def(
          "step",
          [](par::nn::ZeroOptimizer& z, double lr_factor, float grad_scale) {
            optim::StepResult r;
            {
              py::gil_scoped_release no_gil;
              r = z.step(lr_factor, grad_scale);
            }
            return step_result(r);
          },
          py::arg("lr_factor") = 1.0, py::arg("grad_scale") = 1.0f)
      .def("sync_from_model", &par::nn::ZeroOptimizer::sync_from_model)
      .def("state_dict", &par::nn::ZeroOptimizer::state_dict)
      .def("load_state_dict", &par::nn::ZeroOptimizer::load_state_dict, py::arg("state"))
      .def("state_bytes", &par::nn::ZeroOptimizer::state_bytes)
      .def_property_readonly("layout", [](const par::nn::ZeroOptimizer& z) { return layout_dict(z.layout()); });

  m.def(
      "zero_gather_state",
      [](const std::vector<StateDict>& shards, const std::vector<std::pair<std::string, std::vector<int64_t>>>& params,
         const optim::OptimizerConfig& config) {
        return par::nn::gather_zero_state(shards, shapes_of(params), config);
      },
      py::arg("shards"), py::arg("params"), py::arg("config"));
  m.def(
      "zero_split_state",
      [](const StateDict& full, const std::vector<std::pair<std::string, std::vector<int64_t>>>& params,
         const optim::OptimizerConfig& config, int ranks,
         int rank) { return par::nn::split_zero_state(full, shapes_of(params), config, ranks, rank); },
      py::arg("full"), py::arg("params"), py::arg("config"), py::arg("ranks"), py::arg("rank"));
  m.def(
      "global_grad_norm",
      [](const std::vector<std::pair<std::vector<torch::Tensor>, std::vector<par::Communicator*>>>& parts,
         const std::vector<par::Communicator*>& sum_over) {
        std::vector<par::nn::GradNormPart> p;
        for (const auto& [grads, groups] : parts) p.push_back({grads, groups});
        py::gil_scoped_release no_gil;
        return par::nn::global_grad_norm(p, sum_over);
      },
      py::arg("parts"), py::arg("sum_over"));
  m.def(
      "reduce_pending_amaxes",
      [](const std::vector<precision::DelayedScaling*>& states, par::Communicator& group) {
        py::gil_scoped_release no_gil;
        par::nn::reduce_pending_amaxes(states, group);
      },
      py::arg("states"), py::arg("group"));
}

}  // namespace nibble::python
